"""The ship step: check a shipped model by eye (`run`) and pack what an app embeds (`bundle`).

Nothing here imports torch unless it is handed a torch generator: artifacts run with numpy and
their runtime only, as they will on the device.
"""
