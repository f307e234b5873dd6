"""The distill step (`edgedistill.distill(...)`): teacher in, student run directory out — student
construction, losses, trainer (checkpoint/resume, EMA, DDP), teacher-output cache, evaluation."""
