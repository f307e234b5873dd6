"""What runs a model and times it, here or on a device: open a model for running (artifact via its
backend, or a torch model), the timing loop, stats, per-layer and roofline views, the report, and
the device-side entry of SSH profiling. Imports no torch unless handed a torch model."""
