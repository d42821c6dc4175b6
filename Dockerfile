# CPU image of Hamacho: the CLI and the service (`hamacho serve`). Build:  docker build -t hamacho .
# CLI:      docker run --rm -v "$PWD/data:/data" -v "$PWD/results:/results" hamacho \
#             train --dataset-root /data/bottle --result-path /results --backbone-weights /data/resnet18.pth
# Service:  docker compose up -d   (compose.yaml: named volume, token, health check; docs/docker.md)
#           or: docker run -d -p 5000:5000 -e HAMACHO_TOKEN=... -v hamacho-data:/data hamacho \
#                 serve --host 0.0.0.0 --data-dir /data
# GPU image: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t hamacho:gpu .
FROM python:3.11-slim

# OpenCV's headless wheel still needs these shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/hamacho
# CPU-only PyTorch first (about 200 MB instead of the 2.6 GB CUDA build the default index serves).
# The GPU variant passes a CUDA wheel index here; those wheels bring their own CUDA libraries.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir torch torchvision --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md LICENSE ./
COPY hamacho ./hamacho
COPY configs ./configs
# Training, export, every runtime and the service. A line-PC image needs only: pip install ".[onnx]" (no PyTorch).
RUN pip install --no-cache-dir ".[train,onnx,openvino,serve,postgres]" && hamacho --help && hamacho serve --help > /dev/null && hamacho worker --help > /dev/null

# `hamacho serve --host 0.0.0.0` refuses to start without a token: pass HAMACHO_TOKEN in the environment.
EXPOSE 5000
ENTRYPOINT ["hamacho"]
CMD ["--help"]
