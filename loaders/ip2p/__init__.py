"""Pieces shared by every InstructPix2Pix-style editor (guidance math, UNet key maps)."""
