"""Autoresearch's summary block exactly as docs/REFERENCE.md section 1 shows it (its published H100 baseline):
the runner parses it (test_summary), the harness prints it (test_prepare)."""

REFERENCE_BLOCK = """\
---
val_bpb:          0.997900
training_seconds: 300.1
total_seconds:    325.9
peak_vram_mb:     45060.2
mfu_percent:      39.80
total_tokens_M:   499.6
num_steps:        953
num_params_M:     50.3
depth:            8"""
