"""The floor every other part stands on, and exactly what ships to a device besides the runtime:
errors, atomic writes, JSON, hashing, bundled resources, versions, the generator spec, target
profiles, the artifact-directory contract, calibration arrays and image-quality measures.
numpy only: nothing here imports torch, onnx or a runtime (docs/architecture.md)."""
