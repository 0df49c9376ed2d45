# One image for the broker and the workers; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY worker ./worker
COPY client_sdk ./client_sdk
COPY storage ./storage
RUN pip install --no-cache-dir ".[broker,s3,azure,worker,demo]"
EXPOSE 8000
CMD ["inferbox-broker", "--host", "0.0.0.0", "--port", "8000"]
