"""An S3-compatible server on loopback for the tests: moto in server mode, over real HTTP.

The production object-storage path (ObjectStoragePath -> the amazon provider's filesystem ->
s3fs -> HTTP) runs against it unchanged; only the connection's ``endpoint_url`` points here.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

KEY = SECRET = "testing"  # moto accepts any credentials
REGION = "us-east-1"


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.stop()

    @property
    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name=REGION)

    def new_bucket(self, name: str = "") -> str:
        name = name or f"assets-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def connection(self, bucket: str, prefix: str = "campaign-assets") -> dict[str, Any]:
        """The ``campaign_assets`` connection (type aws) for ``s3://<bucket>/<prefix>`` on this server."""
        return {
            "conn_type": "aws",
            "login": KEY,
            "password": SECRET,
            "extra": {
                "url": f"s3://{bucket}/{prefix}",
                "endpoint_url": self.url,
                "region_name": REGION,
                "config_kwargs": {"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 2}},
            },
        }

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        client, found = self.client, {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found

    def put(self, url: str, data: bytes) -> None:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        self.client.put_object(Bucket=bucket, Key=key, Body=data)
