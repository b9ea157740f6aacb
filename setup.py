"""Build hook: compile the bundled guest kernel with the system C compiler.

Everything else about the package lives in pyproject.toml. The kernel is
built from pvtui/guest/src into the package (next to the sources in an
editable install), with a digest of the sources so a stale build is never
used.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package has it
    from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # guest/build.py imports pvtui.errors


def _load_guest_build():
    spec = importlib.util.spec_from_file_location("_pvtui_guest_build", ROOT / "pvtui" / "guest" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithKernel(build_py):
    def run(self):
        super().run()
        guest = _load_guest_build()
        target_dir = ROOT / "pvtui" / "guest" if self.editable_mode else Path(self.build_lib) / "pvtui" / "guest"
        kernel = guest.build_kernel(target_dir / guest.KERNEL_NAME, ROOT / "pvtui" / "guest" / "src")
        (target_dir / (guest.KERNEL_NAME + ".digest")).write_text(
            guest.sources_digest(ROOT / "pvtui" / "guest" / "src")
        )
        print(f"built guest kernel {kernel}")


class PlatformWheel(bdist_wheel):
    """The wheel carries an x86-64 kernel compiled here: it is not ``py3-none-any``.

    Tagged ``py3-none-<platform>``: any Python 3, no extension ABI, this
    machine's platform (``linux_x86_64``), so pip never installs it elsewhere.
    """

    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(cmdclass={"build_py": BuildWithKernel, "bdist_wheel": PlatformWheel})
