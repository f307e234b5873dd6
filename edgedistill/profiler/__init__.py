"""The profile step (`edgedistill.profile(...)`): builds on runtime/ to time teacher, students and
artifacts side by side, here or over SSH (remote.py ships core/ onnxtools/ backends/ runtime/)."""
