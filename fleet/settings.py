"""Fleet settings: one file, driven by the environment (see docs/operating.md, "Configuration")."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)
FLEET_DATA_DIR = Path(os.environ.get("FLEET_DATA_DIR") or BASE_DIR / "data").resolve()
# Private: it holds the SQLite database (session keys), the dev secret key, tokens.
FLEET_DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
with contextlib.suppress(PermissionError):  # another user's directory: theirs to tighten
    if stat.S_IMODE(FLEET_DATA_DIR.stat().st_mode) & 0o077:
        FLEET_DATA_DIR.chmod(0o700)  # made by an older Fleet, or by hand


def _secret_key() -> str:
    key = os.environ.get("SECRET_KEY", "")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # A development key kept in the data dir, so logins survive a restart
    # without a secret ever being written into the source tree.
    path = FLEET_DATA_DIR / "dev-secret-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ninja",
    "fleet",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "fleet.correlation.CorrelationMiddleware",
    "fleet.middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "fleet.middleware.DatabaseUnavailableMiddleware",
    "fleet.middleware.RefusedTransitionMiddleware",
]

ROOT_URLCONF = "fleet.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "fleet.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "fleet.views.navigation",
            ],
        },
    },
]


def _private_sqlite(name: str) -> None:
    """The database holds session keys, so 0600, and SQLite gives its -wal and -shm
    the database file's mode. It is created here (SQLite would create it 0644 under
    the usual umask), and an older, group- or world-readable one is tightened."""
    if name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    with contextlib.suppress(FileExistsError, FileNotFoundError, PermissionError):
        # Missing directory or no permission: SQLite says so when it opens the file.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for suffix in ("", "-wal", "-shm", "-journal"):
        file = path.with_name(path.name + suffix)
        # Missing, or another user's file (its owner's Fleet tightens it): left alone.
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)


# Database: SQLite in the data dir unless DATABASE_URL says otherwise.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{FLEET_DATA_DIR / 'fleet.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on the busy timeout instead of failing with
    # "database is locked" halfway through a transaction.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(FLEET_DATA_DIR / "test-fleet.sqlite3")}
    _private_sqlite(DATABASES["default"]["NAME"])
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # TCP keepalives both ways: a worker whose host died loses its session (and the
    # merge queue's advisory lock with it) within about a minute, not two hours.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10"
            " -c tcp_keepalives_count=3",
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds only rate-limit windows; Redis shares them between processes.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if not REDIS_URL
    else {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        # Short timeouts: while Redis is out of reach the rate limit counts per process
        # (fleet.ratelimit), and no request waits long to find that out.
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "fleet-login"
LOGIN_REDIRECT_URL = "fleet-overview"
LOGOUT_REDIRECT_URL = "fleet-login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = FLEET_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# Content Security Policy (Django 6 built-in): everything from our own origin.
# Inline scripts run only with the request's nonce (``{{ csp_nonce }}``).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# Production hardening; all derived from DEBUG so `check --deploy` passes when DEBUG=0.
# Trust X-Forwarded-Proto only behind a proxy that sets it (anyone could send it otherwise).
# A request's X-Request-ID names the correlation id of the events it writes only when
# it comes from a proxy we trust (anyone could send it otherwise); else Fleet picks one.
FLEET_TRUST_REQUEST_ID = env_bool("FLEET_TRUST_REQUEST_ID", env_bool("FLEET_BEHIND_PROXY", False))
if env_bool("FLEET_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"refusals": {"()": "fleet.refusal_logs.ExpectedRefusals"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["refusals"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # Django's own loggers through the same handler only: its default console handler
    # (with DEBUG on) printed every 4xx a second time, with its traceback.
    "loggers": {"django": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# Fleet behaviour.
# How long an answer to a call made with an Idempotency-Key is kept for its retries.
FLEET_IDEMPOTENCY_TTL = env_int("FLEET_IDEMPOTENCY_TTL", 24 * 3600)
FLEET_HEARTBEAT_TTL = env_int("FLEET_HEARTBEAT_TTL", 120)  # seconds before an agent is stale
FLEET_LEASE_TTL = env_int("FLEET_LEASE_TTL", 900)  # seconds a task lease lasts unrenewed
FLEET_HEARTBEAT_INTERVAL = env_int("FLEET_HEARTBEAT_INTERVAL", 30)  # how often agents beat
# A file claim lives about three heartbeat intervals past the agent's last heartbeat.
FLEET_CLAIM_TTL = env_int("FLEET_CLAIM_TTL", 3 * FLEET_HEARTBEAT_INTERVAL)
FLEET_WAVE_SOFT_LIMIT = 4  # the "rule of 4"
FLEET_CONTEXT_ROTATE_PCT = 60  # the default; each repository can set its own
# Context use estimated from proxies when an agent cannot report it (percent points
# per tool call, per file read and per minute of the session; rough defaults).
FLEET_CONTEXT_PER_TOOL_CALL = float(os.environ.get("FLEET_CONTEXT_PER_TOOL_CALL", "0.4"))
FLEET_CONTEXT_PER_FILE_READ = float(os.environ.get("FLEET_CONTEXT_PER_FILE_READ", "1.5"))
FLEET_CONTEXT_PER_MINUTE = float(os.environ.get("FLEET_CONTEXT_PER_MINUTE", "0.1"))
FLEET_WORKER_INTERVAL = env_int("FLEET_WORKER_INTERVAL", 5)
FLEET_CHECK_TIMEOUT = env_int("FLEET_CHECK_TIMEOUT", 900)  # seconds a merge check may run
FLEET_API_RATE = os.environ.get("FLEET_API_RATE", "1200/m")  # per agent
# Failed sign-ins allowed per username and address, and per address, before the login
# form refuses (429) until the window ends.
FLEET_LOGIN_RATE = os.environ.get("FLEET_LOGIN_RATE", "10/h")
FLEET_LOGIN_IP_RATE = os.environ.get("FLEET_LOGIN_IP_RATE", "100/h")
FLEET_BOOT_JOURNAL = 20  # journal entries in the boot digest
# Hard wall-clock limits the worker enforces (the agent is stopped, reason "timeout").
FLEET_SESSION_MAX_SECONDS = env_int("FLEET_SESSION_MAX_SECONDS", 8 * 3600)
FLEET_TASK_MAX_SECONDS = env_int("FLEET_TASK_MAX_SECONDS", 24 * 3600)
FLEET_TASK_MAX_ATTEMPTS = env_int("FLEET_TASK_MAX_ATTEMPTS", 3)  # leases lost before it fails
FLEET_WEBHOOK_ATTEMPTS = env_int("FLEET_WEBHOOK_ATTEMPTS", 6)  # tries before giving up
FLEET_WEBHOOK_RETRY = env_int("FLEET_WEBHOOK_RETRY", 10)  # seconds before the first retry
FLEET_WEBHOOK_TIMEOUT = env_int("FLEET_WEBHOOK_TIMEOUT", 5)  # seconds per try
# The address agents use to reach Fleet (written into their identity files).
# Runners (python -m fleet.runner): silent after this many seconds without a sync;
# crashed CLIs restarted this many times in a row before a person must look; the
# tmux socket (-L) runners use, empty for the user's default server.
FLEET_RUNNER_SILENT = env_int("FLEET_RUNNER_SILENT", 15)
FLEET_RUNNER_INTERVAL = float(
    os.environ.get("FLEET_RUNNER_INTERVAL", "1.0")
)  # seconds between syncs
FLEET_RUNNER_MAX_RESTARTS = env_int("FLEET_RUNNER_MAX_RESTARTS", 3)
FLEET_TMUX_SOCKET = os.environ.get("FLEET_TMUX_SOCKET", "")
FLEET_PUBLIC_URL = os.environ.get("FLEET_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
# The living demo's story starts when a person signs in ("sign-in"), or at once ("now").
FLEET_DEMO_START = os.environ.get("FLEET_DEMO_START", "sign-in")
FLEET_PORTS_FROM = env_int("FLEET_PORTS_FROM", 20000)  # agents' dev-server port blocks
FLEET_PORTS_PER_AGENT = env_int("FLEET_PORTS_PER_AGENT", 10)
# Heartbeats (batched) and claims through the lean ASGI routes (fleet.api.fastpath); 0
# sends them through the full Django stack like every other call.
FLEET_HEARTBEAT_FASTPATH = env_bool("FLEET_HEARTBEAT_FASTPATH", True)
# Lean claims run at once per web process, each on a thread and database connection of
# its own: on PostgreSQL they overlap their round trips. SQLite has one writer, so 1:
# the process's sync thread, which the heartbeat batches use too.
FLEET_CLAIM_THREADS = env_int(
    "FLEET_CLAIM_THREADS",
    4 if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else 1,
)
# Mounts the benchmark's baseline views (/_bench/ping, /_bench/raw); fleet_bench sets it.
FLEET_BENCH = env_bool("FLEET_BENCH", False)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("FLEET_API_MAX_BODY", 1024 * 1024)
