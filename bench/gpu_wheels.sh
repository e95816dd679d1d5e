#!/bin/sh
# Wheels the GPU machine lacks (it has torch, numpy, scipy, scikit-learn/-image, httpx, click, but
# not the service stack), downloaded here for its Python 3.12 into .whl/ (ignored: see bench/README.md).
# Versions: those of the project's CI venv. Each wheel's own needs are in the list (--no-deps).
# Then on the GPU machine: see bench/README.md for the one command.
set -e
cd "$(dirname "$0")/.."
mkdir -p .whl
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
  alembic==1.20.1 Mako==1.4.3 amqp==5.4.2 annotated-types==0.8.0 billiard==4.3.2 celery==5.7.0 \
  click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1 prompt-toolkit wcwidth==0.9.4 \
  fastapi==0.165.0 starlette==1.10.0 kombu==5.7.0 vine==5.1.0 tzdata \
  pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 \
  python-multipart==0.0.34 SQLAlchemy==2.1.9 typing-inspection==0.4.5 uvicorn==0.55.0 redis==8.1.0 \
  tzlocal==5.4.5 opentelemetry-api==1.45.2 typing_extensions==4.16.0 click==8.5.1 anyio==4.16.0 \
  python-dateutil==2.9.0.post0 annotated-doc==0.0.7 \
  streaming-form-data==2.1.0 smart-open==9.0.4 wrapt==2.5.2 aiofiles==25.1.0 httpx-sse==0.4.3 tenacity==9.2.1
ls .whl
