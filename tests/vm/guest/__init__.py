"""Tests that run inside the QEMU test guest against its real kernel (see conftest.py)."""
