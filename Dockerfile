# One image for every sagaflow process (api, worker, relay, projector); the command
# picks the process. Local-service wheels are installed but unused in compose, where
# PostgreSQL, Temporal and Kafka run as their own containers.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sagaflow ./sagaflow
COPY domain ./domain
COPY eventstore ./eventstore
COPY workflows ./workflows
COPY activities ./activities
COPY streaming ./streaming
COPY projections ./projections
COPY api ./api
COPY bench ./bench
COPY worker.py ./
RUN pip install . && useradd --system --uid 10001 sagaflow
USER sagaflow
EXPOSE 8000
CMD ["sagaflow", "api"]
