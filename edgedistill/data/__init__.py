"""Where pixels come from: bundled photos and digits, degradations, image folders, training data
sources, calibration sets, held-out inputs, image files in and out. Below distill and export."""
