# One image for the API and the GPU workers of the w1 job service; they differ only in command:
#   docker run IMAGE                 -> `w1 serve --workers 0` (the API and the reconciler, port 8000)
#   docker run --gpus 1 IMAGE worker -> `w1 worker` (one worker process per GPU)
# The base image brings CUDA, cuDNN and a CUDA build of torch + torchvision; pip must keep them.
# One torch version story: the image's torch is the one `make` installs (Makefile TORCH, 2.14.1);
# tests/service/test_compose.py checks that the two agree.
FROM pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    W1_DATA_DIR=/data \
    W1_HOST=0.0.0.0 \
    W1_PORT=8000

WORKDIR /opt/w1

# Dependencies first, in their own layer (rebuilt only when pyproject.toml changes). The
# constraints pin torch/torchvision to the image's CUDA builds so pip never swaps them for others.
COPY pyproject.toml README.md ./
COPY docker/requirements.py docker/
RUN python docker/requirements.py all > /tmp/requirements.txt \
    && python docker/requirements.py --keep torch torchvision > /tmp/constraints.txt \
    && pip install --constraint /tmp/constraints.txt -r /tmp/requirements.txt

COPY critics critics
COPY training training
COPY service service
COPY docker docker
RUN pip install --constraint /tmp/constraints.txt --no-deps . \
    && python -c "import torch, service.cli; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Unprivileged user, named by number so Kubernetes' runAsNonRoot can verify it (hadolint DL3066);
# /data holds uploads, checkpoints, artifacts (and the SQLite file and broker folders of the
# embedded mode). Share it between the API and the workers.
RUN groupadd --gid 10001 w1 \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin w1 \
    && mkdir -p /data && chown 10001:10001 /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# The API's check; a worker container overrides it with `healthcheck.py worker` (compose does).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/w1/docker/healthcheck.py", "api"]

ENTRYPOINT ["w1"]
CMD ["serve", "--workers", "0"]
