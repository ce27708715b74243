# Seed 000's image: the API server with the web extra. Data (candles, SQLite history) lives in /data.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CRACKTRADER_DATA_DIR=/data NUMBA_CACHE_DIR=/data/numba-cache
COPY . /app
WORKDIR /app
RUN pip install --no-cache-dir -e .'[web]'
VOLUME ["/data"]
EXPOSE 8000
# Inside a container the server must bind 0.0.0.0 to be reachable through a published port. Authentication
# is not available yet, so the bind needs --insecure: publish the port on the host's loopback only, e.g.
#   docker run -p 127.0.0.1:8000:8000 cracktrader
CMD ["python", "scripts/run_web_server.py", "--host", "0.0.0.0", "--insecure"]
