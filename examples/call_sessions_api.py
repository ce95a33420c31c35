"""Call the tracker's IAM-authorized sessions API with SigV4, as your own service would (docs/deploy.md).

    python examples/call_sessions_api.py POST https://ID.execute-api.REGION.amazonaws.com/prod/sessions b.json
    python examples/call_sessions_api.py GET https://ID.execute-api.REGION.amazonaws.com/prod/sessions/ID

It signs with the standard AWS credentials and region (environment, profile, role; service `execute-api`)
and prints the status and the JSON answer. It needs only botocore and urllib3, which boto3 brings.
"""

import json
import sys
from http import HTTPStatus
from pathlib import Path

import botocore.session
import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest


def signed_headers(method: str, url: str, body: bytes | None, *, region: str | None = None) -> dict[str, str]:
    """The headers of `method url` signed for API Gateway with the caller's AWS credentials."""
    session = botocore.session.get_session()
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    credentials = session.get_credentials()
    if credentials is None:
        raise SystemExit("no AWS credentials found (environment, ~/.aws, or a role)")
    SigV4Auth(credentials, "execute-api", region or session.get_config_variable("region")).add_auth(request)
    return dict(request.headers)


def main(argv: list[str]) -> int:
    method, url, *body_file = argv
    body = Path(body_file[0]).read_bytes() if body_file else None
    headers = signed_headers(method.upper(), url, body)
    answer = urllib3.request(method.upper(), url, body=body, headers=headers, timeout=30, retries=False)
    text = answer.data.decode()
    print(answer.status, json.dumps(json.loads(text), indent=2) if text else "")
    return 0 if answer.status < HTTPStatus.BAD_REQUEST else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
