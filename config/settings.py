"""The single settings module: everything comes from the environment (and `.env`)."""

import re
from datetime import timedelta
from pathlib import Path

import environ
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

from config.dotenv import load_env_file

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# The environment wins: .env only fills in what it does not set.
load_env_file(BASE_DIR / ".env")

# --- Core ---
DEBUG = env.bool("DEBUG", default=False)

# Keys that ship in the repository (docs, .env.example, tests) and must never
# sign production tokens.
DEVELOPMENT_SECRET_KEYS = frozenset(
    {
        "",
        "change-me",
        "dev-insecure-secret-key-change-me",
        "your-secret-key-here",
    }
)
SECRET_KEY = env.str("SECRET_KEY", default="")
if SECRET_KEY in DEVELOPMENT_SECRET_KEYS or SECRET_KEY.startswith("django-insecure"):
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set")
    SECRET_KEY = SECRET_KEY or "dev-insecure-secret-key-change-me"

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django_prometheus",
    "corsheaders",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_tasks_db",
    "config",
    "accounts",
    "catalog",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "config.middleware.RequestContextMiddleware",
    # Probes and scrapes are answered here, before anything reads the Host
    # header: they are addressed by IP or service name, not by site host name.
    "config.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "config.middleware.SiteSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.middleware.SiteAuthenticationMiddleware",
    "config.middleware.SiteMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# --- Database ---
DB_POOL_SIZE = env.int("DB_POOL_SIZE", default=20)
DB_MAX_OVERFLOW = env.int("DB_MAX_OVERFLOW", default=10)
DB_POOL_TIMEOUT = env.int("DB_POOL_TIMEOUT", default=30)
# "pool" = Django's psycopg pool (for threaded workers); "persistent" = one
# long-lived, health-checked connection per worker (for sync workers).
DB_CONNECTIONS = env.str("DB_CONNECTIONS", default="persistent")
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=30_000)
DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = env.int(
    "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", default=60_000
)
DB_CONNECT_TIMEOUT = env.int("DB_CONNECT_TIMEOUT", default=3)
# The hottest reads (config.compiled) run as statements PostgreSQL prepares
# once per connection. Off behind a pooler that cannot keep prepared
# statements across transactions (PgBouncer in transaction mode before 1.21,
# or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)

if "DATABASE_URL" in env.ENVIRON:
    _default_db = env.db("DATABASE_URL")
    _default_db["ENGINE"] = "config.postgres"
else:
    from config.embedded import embedded_postgres_database

    _default_db = embedded_postgres_database(BASE_DIR / ".data" / "postgres")


def _database(
    base: dict, *, pooled: bool = True, connect_timeout: int = DB_CONNECT_TIMEOUT
) -> dict:
    """Return a connection config with timeouts, health checks and pooling applied."""
    db = {**base}
    options = {
        **db.get("OPTIONS", {}),
        "connect_timeout": connect_timeout,
        # jit=off: JIT compiles a query whose estimated cost is high, which
        # a rare search term's (PostgreSQL guesses 0.5% of 10,000,000 rows)
        # is; compiling took longer than the LIMITed query it sped up.
        "options": (
            f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
            " -c idle_in_transaction_session_timeout="
            f"{DB_IDLE_IN_TRANSACTION_TIMEOUT_MS} -c jit=off"
        ),
        # Django's cursors bind on the client and never prepare; this lets
        # config.postgres' prepared_cursor() prepare (None: psycopg never does).
        "prepare_threshold": 5 if DB_PREPARED_STATEMENTS else None,
    }
    if pooled and DB_CONNECTIONS == "pool":
        options["pool"] = {
            "min_size": 1,
            "max_size": DB_POOL_SIZE + DB_MAX_OVERFLOW,
            "timeout": DB_POOL_TIMEOUT,
        }
        db["CONN_MAX_AGE"] = 0
    else:
        db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
    # Persistent connections are pinged before reuse; with the pool, Django
    # passes ConnectionPool.check_connection so psycopg checks on checkout.
    db["CONN_HEALTH_CHECKS"] = True
    db["OPTIONS"] = options
    db.setdefault("TEST", {})
    return db


DATABASES = {"default": _database(_default_db)}
# Behind PgBouncer in transaction mode no server-side cursor survives between
# statements: Django then fetches whole results, and export_products reads in
# keyset batches instead.
DB_DISABLE_SERVER_SIDE_CURSORS = env.bool(
    "DB_DISABLE_SERVER_SIDE_CURSORS", default=False
)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DB_DISABLE_SERVER_SIDE_CURSORS
if "DATABASE_REPLICA_URL" in env.ENVIRON:
    _replica = env.db("DATABASE_REPLICA_URL")
    _replica["ENGINE"] = "config.postgres"
    # Never pooled: a pool waits DB_POOL_TIMEOUT for a stopped replica, and
    # reads must fall back to the primary at once (config.replica).
    DATABASES["replica"] = _database(
        _replica,
        pooled=False,
        connect_timeout=env.int("DB_REPLICA_CONNECT_TIMEOUT", default=2),
    )
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"]["DISABLE_SERVER_SIDE_CURSORS"] = DB_DISABLE_SERVER_SIDE_CURSORS
    DATABASE_ROUTERS = ["config.db_router.PrimaryReplicaRouter"]

# Seconds a failed replica is left alone, and a lagging one is not asked again.
DB_REPLICA_RETRY_AFTER = env.float("DB_REPLICA_RETRY_AFTER", default=5.0)
DB_REPLICA_LAG_RECHECK = env.float("DB_REPLICA_LAG_RECHECK", default=0.05)
# The replica applies each commit before the primary confirms it
# (synchronous_commit = remote_apply): no position check needed.
DB_REPLICA_REMOTE_APPLY = env.bool("DB_REPLICA_REMOTE_APPLY", default=False)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ---
CACHE_TTL = env.int("CACHE_TTL", default=3600)
USER_CACHE_TTL = env.int("USER_CACHE_TTL", default=300)
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=0.25)
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=0.25)
# After a Redis failure, skip Redis for this long instead of waiting on it per call.
CACHE_RETRY_AFTER = env.float("CACHE_RETRY_AFTER", default=5.0)
# Values each thread keeps of what it read from Redis, invalidated by Redis
# (CLIENT TRACKING); 0 turns local copies off. See config.cache.local_copies.
CACHE_LOCAL_MAX_BYTES = env.int("CACHE_LOCAL_MAX_BYTES", default=16 * 1024 * 1024)
# Local copies are served only this long after the connection last proved current.
CACHE_LOCAL_LEASE = env.float("CACHE_LOCAL_LEASE", default=0.1)
# Bumps Redis missed are recorded in PostgreSQL; each process replays them at
# most this often (seconds; 0: only after its own misses). See config.cache.ledger.
CACHE_LEDGER_POLL = env.float("CACHE_LEDGER_POLL", default=5.0)
# How long a management command waits for Redis to take its bumps before it
# exits non-zero saying so.
CACHE_INVALIDATION_WAIT = env.float("CACHE_INVALIDATION_WAIT", default=10.0)
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.backend.FailOpenRedisCache",
            "LOCATION": REDIS_URL,
            "TIMEOUT": CACHE_TTL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="api"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": REDIS_CONNECT_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "CONNECTION_POOL_KWARGS": {"max_connections": 50},
            },
        }
    }
else:
    # Shared by every worker process through PostgreSQL, so invalidation and
    # throttles stay correct with several workers (a per-process cache would not).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
            "TIMEOUT": CACHE_TTL,
        }
    }

# --- Auth ---
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["accounts.backends.EmailBackend"]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ("username", "email")},
    },
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Email is the USERNAME_FIELD; it is unique through a UniqueConstraint on
# Lower("email"), which the auth system check cannot see.
SILENCED_SYSTEM_CHECKS = ["auth.W004"]

# --- API ---
API_TITLE = env.str("API_TITLE", default="Scalable Django API")
API_VERSION = env.str("API_VERSION", default="1.0.0")
API_PREFIX = "/" + env.str("API_PREFIX", default="/api/v1").strip("/")
ACCESS_TOKEN_EXPIRE_MINUTES = env.int("ACCESS_TOKEN_EXPIRE_MINUTES", default=30)
REFRESH_TOKEN_EXPIRE_DAYS = env.int("REFRESH_TOKEN_EXPIRE_DAYS", default=7)
ALGORITHM = env.str("ALGORITHM", default="HS256")
MAX_REQUEST_BODY_BYTES = env.int("MAX_REQUEST_BODY_BYTES", default=5 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES
BULK_MAX_ITEMS = 1000
NUM_PROXIES = env.int("NUM_PROXIES", default=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.api.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticatedOrReadOnly",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": (
        "config.api.negotiation.RememberingContentNegotiation"
    ),
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.SafeJSONParser"],
    "EXCEPTION_HANDLER": "config.api.exceptions.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "config.api.schema.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "login": env.str("THROTTLE_LOGIN", default="10/min"),
        "register": env.str("THROTTLE_REGISTER", default="20/hour"),
        "password_reset": env.str("THROTTLE_PASSWORD_RESET", default="5/hour"),
    },
    # 0, not None: with None DRF's throttles trust a client-sent X-Forwarded-For.
    "NUM_PROXIES": NUM_PROXIES,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=REFRESH_TOKEN_EXPIRE_DAYS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": ALGORITHM,
    "SIGNING_KEY": SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "AUTH_TOKEN_CLASSES": ("accounts.api.authentication.VerifiedOnceAccessToken",),
}

# --- CORS ---
# Closed by default: browsers on other origins may call the API only once
# their origins are listed (scheme://host[:port], comma-separated).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = rf"^{re.escape(API_PREFIX)}/"
CORS_ALLOW_HEADERS = (*default_headers, "if-match", "if-none-match", "x-request-id")
CORS_EXPOSE_HEADERS = [
    "etag",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-cache",
    "x-process-time",
    "x-request-id",
]
if CORS_ALLOWED_ORIGINS:
    # Installed only when an origin is allowed: closed, it would only add
    # work (and a Vary header) to every response.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("config.middleware.ProbeMiddleware") + 1,
        "corsheaders.middleware.CorsMiddleware",
    )

SPECTACULAR_SETTINGS = {
    "TITLE": API_TITLE,
    "VERSION": API_VERSION,
    "DESCRIPTION": "Users and product catalog REST API.",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operation ids and tags start after the prefix: products_list, tag products.
    "SCHEMA_PATH_PREFIX": f"^{re.escape(API_PREFIX)}",
}

# --- Tasks and email ---
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend"
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@example.com")
FRONTEND_URL = env.str("FRONTEND_URL", default="http://127.0.0.1:8000")

# --- Static files ---
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Internationalisation ---
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security ---
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# /healthz and /readyz are probed over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG
)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_CSP = {
    "default-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "script-src": ["'self'"],
}

# --- Operations ---
WORKERS = env.int("WORKERS", default=4)
# Handler threads per worker process under granian (config/serving.py). One:
# the handlers are CPU-bound Python, and threads of one process take turns on
# its GIL; the mix served 1.4-1.8x more with 4x1 than with 2x4 (docs/operations.md).
SERVER_THREADS = env.int("SERVER_THREADS", default=1)
MAX_CONNECTIONS = env.int("MAX_CONNECTIONS", default=1000)
PROMETHEUS_EXPORT_MIGRATIONS = False
# /metrics answers peers in these networks (CIDR list) or a matching bearer token.
METRICS_ALLOWED_NETWORKS = env.list(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"]
)
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Opt-in error reporting: set, it starts sentry-sdk; unset, nothing is imported.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from config.sentry import init_sentry

    init_sentry(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "config.logging.JSONFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
    },
}
