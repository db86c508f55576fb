"""LR synthesis: MATLAB-exact bicubic and Real-ESRGAN-style high-order degradation."""
