"""Reads a secret through the AWS Secrets Manager Agent's API, as AWS documents calling the agent
(and the Lambda extension): `requests`, the token from AWS_TOKEN in the
X-Aws-Parameters-Secrets-Token header, the port from PARAMETERS_SECRETS_EXTENSION_HTTP_PORT
(2773 by default). Nothing here is specific to credential-broker: it is the code the broker's
agent API must keep working. Prints the answer's JSON on stdout.

Usage: python get_secret.py SECRET_ID
"""

import os
import sys
from urllib.parse import quote

import requests


def get_secret(secret_id: str) -> str:
    port = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")
    url = f"http://localhost:{port}/secretsmanager/get?secretId={quote(secret_id, safe='')}"
    headers = {"X-Aws-Parameters-Secrets-Token": os.environ["AWS_TOKEN"].strip()}
    response = requests.get(url, headers=headers, timeout=10)
    if response.status_code != 200:
        raise RuntimeError(f"status code {response.status_code}: {response.text}")
    return response.text


if __name__ == "__main__":
    print(get_secret(sys.argv[1]))
