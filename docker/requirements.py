"""Print the package's requirements (from pyproject.toml) with the extras named on the command
line (`requirements.py all`), or with `--keep NAME...` pins of the versions already installed,
for use as pip constraints. Used by the Dockerfile so `pip install` keeps the base image's CUDA
builds of torch and torchvision. An extra that names this package's own extras
(`w1-service[estimator]`) is expanded in place."""
import importlib.metadata
import re
import sys
import tomllib


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The base dependencies plus those of ``extras`` (recursively), each once, in order."""
    out, seen, todo = list(project["dependencies"]), set(), list(extras)
    optional = project.get("optional-dependencies", {})
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            sys.exit(f"no extra {extra!r} in pyproject.toml (has: {', '.join(optional)})")
        seen.add(extra)
        for req in optional[extra]:
            own = re.fullmatch(rf"{re.escape(project['name'])}\[([\w,\s-]+)\]", req.strip())
            if own:
                todo.extend(e.strip() for e in own.group(1).split(","))
            elif req not in out:
                out.append(req)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--keep"]:
        for name in sys.argv[2:]:
            print(f"{name}=={importlib.metadata.version(name)}")
    else:
        with open("pyproject.toml", "rb") as fh:
            print("\n".join(requirements(tomllib.load(fh)["project"], sys.argv[1:])))
