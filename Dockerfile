# The callgate server image: gateway, console, Celery worker and beat share it.
FROM python:3.11-slim
RUN pip install --no-cache-dir "uv==0.13.8"
WORKDIR /app
COPY pyproject.toml uv.lock README.md alembic.ini ./
COPY sdk ./sdk
COPY gateway ./gateway
COPY console ./console
COPY policies ./policies
RUN uv sync --frozen --no-dev --all-packages && useradd --system callgate
ENV PATH="/app/.venv/bin:$PATH"
USER callgate
EXPOSE 8080
CMD ["callgate", "serve", "--host", "0.0.0.0"]
