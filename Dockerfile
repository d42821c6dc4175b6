# CPU image of Hamacho. Build:  docker build -t hamacho .
# Use:  docker run --rm -v "$PWD/data:/data" -v "$PWD/results:/results" hamacho \
#         train --dataset-root /data/bottle --result-path /results --backbone-weights /data/resnet18.pth
FROM python:3.11-slim

# OpenCV's headless wheel still needs these shared libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 libgl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/hamacho
# CPU-only PyTorch first (about 200 MB instead of the 2.6 GB CUDA build the default index serves).
RUN pip install --no-cache-dir torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md LICENSE ./
COPY hamacho ./hamacho
COPY configs ./configs
# Training, export and every runtime. A line-PC image needs only: pip install ".[onnx]" (no PyTorch).
RUN pip install --no-cache-dir ".[train,onnx,openvino]" && hamacho --help

ENTRYPOINT ["hamacho"]
CMD ["--help"]
