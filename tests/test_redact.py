"""Redaction: a table of realistic fake secrets, each caught; ordinary code and prose left alone."""

from __future__ import annotations

import pytest

from formicary.store.redact import REDACTED, Redactor, secret_env_names

# (what, text around the secret, the secret). Every value is fake but has the real shape.
SECRETS = [
    ("openai", "OPENAI_API_KEY is {}", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    ("anthropic", "key: {}", "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("groq", "export GROQ={}", "gsk_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2"),
    ("huggingface", "token {} here", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"),
    ("aws access key", "aws {} id", "AKIAIOSFODNN7EXAMPLE"),
    ("aws session key", "aws {} id", "ASIAY34FZKBOKMUTVV7A"),
    ("aws secret key", "aws_secret_access_key = {}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("google", "maps {}", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
    ("xai", "XAI={}", "xai-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd"),
    ("gitlab", "remote {}", "glpat-AbCdEfGhIj0123456789"),
    ("github", "gh {}", "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    ("github fine-grained", "gh {}", "github_pat_11ABCDEFG0123456789_AbCdEfGhIjKlMnOpQrStUvWxYz"),
    ("slack", "slack {}", "xoxb-123456789012-123456789012-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe live", "stripe {}", "sk_live_51HAbCdEfGhIjKlMnOpQrStUv"),
    ("stripe restricted", "stripe {}", "rk_test_51HAbCdEfGhIjKlMnOpQrStUv"),
    ("npm", "//registry.npmjs.org/:_authToken={}", "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
    (
        "jwt",
        "cookie {}",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("bearer header", "Authorization: Bearer {}", "a1b2c3d4e5f6a7b8c9d0"),
    ("basic header", "Authorization: Basic {}", "dXNlcjpwYXNzd29yZDEyMw=="),
    ("x-api-key header", "x-api-key: {}", "7f3a9c2e1b4d8f6a"),
    ("json header", '{{"X-Api-Key": "{}"}}', "Zk3mQ9vL2pR8tW4y"),
    ("url password", "git clone https://deploy:{}@git.example.com/r.git", "Tr0ub4dor-and-3"),
    ("db url password", "DATABASE_URL=postgres://app:{}@db:5432/app", "s3cr3tPassw0rd"),
    ("dotenv password", "DB_PASSWORD={}", "hunter2hunter2"),
    ("dotenv quoted", 'SESSION_SECRET="{}"', "c0ffee-c0ffee-c0ffee"),
    ("yaml token", "  auth_token: {}", "9f8e7d6c5b4a39281706"),
    ("json api key", '{{"api_key": "{}"}}', "abcd1234efgh5678ijkl"),
]

PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n-----END RSA PRIVATE KEY-----"
)

KEPT = [
    "def get_token(self) -> str:",
    "tokens = count_tokens(text)",
    "max_tokens=2048",
    "self.api_key = api_key",
    'token = os.environ["X"]',
    "secret_value = compute()",
    "token_budget = 5_000_000",
    'url = f"https://{user}:{password}@{host}/"',
    "task-0123456789abcdefghij landed",
    "authorization required for this endpoint",
    "tokens_per_worker: int = Field(200_000, ge=1)",
    "see https://example.com/docs?a=1",
    "password = getpass.getpass()",
]


@pytest.mark.parametrize(("what", "around", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_redaction_catches_realistic_keys(what: str, around: str, secret: str) -> None:
    text = around.format(secret)
    redacted = Redactor()(f"before\n{text}\nafter")
    assert secret not in redacted, what
    assert REDACTED in redacted and redacted.startswith("before\n") and redacted.endswith("\nafter")


def test_redaction_catches_pem_private_keys() -> None:
    out = Redactor()(f"key file:\n{PEM}\nend")
    assert "MIIEow" not in out and out == f"key file:\n{REDACTED}\nend"


@pytest.mark.parametrize("text", KEPT)
def test_redaction_leaves_code_and_prose_alone(text: str) -> None:
    assert Redactor()(text) == text


def test_redaction_of_secret_named_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MY_SERVICE_KEY": "plainvalue-one",
        "DEPLOY_TOKEN": "plainvalue-two",
        "APP_SECRET": "plainvalue-three",
        "PG_PASSWORD_FILE_CONTENT": "plainvalue-four",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_API_KEY_ENV", "NOT_A_SECRET_NAME_ONLY")
    assert {"MY_SERVICE_KEY", "DEPLOY_TOKEN", "APP_SECRET", "PG_PASSWORD_FILE_CONTENT"} <= secret_env_names()
    assert "OPENAI_API_KEY_ENV" not in secret_env_names()
    out = Redactor()("a plainvalue-one b plainvalue-two c plainvalue-three d plainvalue-four")
    assert "plainvalue" not in out and out.count(REDACTED) == 4


def test_overlapping_detectors_make_one_replacement() -> None:
    out = Redactor()("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY tail")
    assert out == f"AWS_SECRET_ACCESS_KEY={REDACTED} tail"
