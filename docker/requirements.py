"""Print the package's requirements (from pyproject.toml), or with `--keep NAME...` pins of the
versions already installed, for use as pip constraints. Used by the Dockerfile so `pip install`
keeps the base image's CUDA builds of torch and torchvision."""
import importlib.metadata
import sys
import tomllib

if __name__ == "__main__":
    if sys.argv[1:2] == ["--keep"]:
        for name in sys.argv[2:]:
            print(f"{name}=={importlib.metadata.version(name)}")
    else:
        with open("pyproject.toml", "rb") as fh:
            print("\n".join(tomllib.load(fh)["project"]["dependencies"]))
