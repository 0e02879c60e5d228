# Image for the example services in docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobify_celery ./jobify_celery
RUN pip install --no-cache-dir ".[redis]"
COPY examples ./examples
ENV PYTHONUNBUFFERED=1
