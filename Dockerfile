FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
COPY kakarot_workers ./kakarot_workers
RUN pip install --no-cache-dir -r requirements.txt && pip install --no-cache-dir --no-deps .
USER nobody
