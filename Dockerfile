# One image for every Python service of docker-compose.yml: the Dask scheduler and workers
# (which must have the project installed to run its tasks), the pipeline replicas and the
# load generator. Schemas and examples stay in /app, the working directory pipelines are
# imported from.
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app PIP_NO_CACHE_DIR=1

COPY pyproject.toml README.md ./
COPY stream ./stream
COPY operators ./operators
RUN pip install ".[ml]"

COPY schemas ./schemas
COPY examples ./examples

# The metrics endpoint of `stream run`; the Dask scheduler and its dashboard.
EXPOSE 9108 8786 8787
CMD ["stream", "--help"]
