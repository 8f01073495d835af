# One image for every Python service of docker-compose.yml: the Dask scheduler and workers
# (which must have the project installed to run its tasks), the pipeline replicas and the
# load generator. Schemas and examples stay in /app, the working directory pipelines are
# imported from.
# The base is pinned to a patch release on a named Debian release; the services run as an
# unprivileged user.
FROM python:3.11.11-slim-bookworm

WORKDIR /app
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app PIP_NO_CACHE_DIR=1

COPY pyproject.toml README.md ./
COPY stream ./stream
COPY operators ./operators
RUN pip install ".[ml]"
# the Dask scheduler's dashboard (port 8787) is served only with bokeh installed
RUN pip install "bokeh>=3.1"

COPY schemas ./schemas
COPY examples ./examples

RUN useradd --create-home --uid 10001 stream
USER stream

# The metrics endpoint of `stream run`; the Dask scheduler and its dashboard.
EXPOSE 9108 8786 8787
CMD ["stream", "--help"]
