"""The detectors: backbones, FPN, RPN, RoI heads, assembly from a preset, checkpoints."""
