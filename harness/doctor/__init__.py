"""The pre-flight doctor: `python -m harness.doctor CHECKPOINT [--data PATH] [--env builtin]` (docs/DOCTOR.md)."""

from harness.doctor.doctor import DoctorConfig, run_doctor
from harness.doctor.report import Check, DoctorReport

__all__ = ["Check", "DoctorConfig", "DoctorReport", "run_doctor"]
