# One image for every actor: `tandem serve <actor> --nats-url ...`.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir '.[local]'
ENTRYPOINT ["tandem"]
