"""Build detkit._C from csrc/ (C++17, pybind11 on numpy buffers, no torch headers,
no OpenMP: csrc/common.h explains why the kernels use std::thread).

The extension is optional: when no compiler is available, or the build fails,
the install still succeeds and detkit falls back to its torch reference ops
(with one warning at import).
"""
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import Pybind11Extension
except ImportError:  # pybind11 is a build requirement; guard anyway
    Pybind11Extension = None

SOURCES = ["csrc/module.cpp", "csrc/box_iou.cpp", "csrc/nms.cpp", "csrc/soft_nms.cpp", "csrc/ssd_assign.cpp"]
# -ffp-contract=off keeps a*b+c unfused so the kernels round exactly like torch;
# -fno-trapping-math lets guarded divisions vectorise (IEEE results unchanged).
COMPILE_ARGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-pthread"]
LINK_ARGS = ["-pthread"]


class OptionalBuildExt(build_ext):
    """Build the extension if possible; never fail the install because of it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure is non-fatal
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        msg = f"detkit: building the C++ extension failed ({exc}); the torch reference ops will be used."
        warnings.warn(msg)
        print(msg, file=sys.stderr)


ext_modules = []
if Pybind11Extension is not None and sys.platform != "win32":
    ext_modules.append(
        Pybind11Extension(
            "detkit._C",
            SOURCES,
            cxx_std=17,
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
