"""The whole job in one command: distill -> export per target -> profile (edgedistill compress / demo)."""
