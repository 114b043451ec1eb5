"""Pin the names other slices and the CLI rely on (a rename must be deliberate)."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "bastion.service.app": ["API_PREFIX", "create_app", "create_app_from_env", "status_for"],
    "bastion.service.ca.service": [
        "CA_KEY_CACHE_SIZE",
        "SigningKey",
        "ca_state",
        "create_tenant_ca",
        "load_ca_key",
        "load_signing_ca",
        "load_signing_key",
        "tenant_ca_pem",
        "trust_bundle_pem",
        "trusted_ca_pems",
        "trusted_cas",
    ],
    "bastion.service.ca.crl": [
        "DEFAULT_CRL_POLICY",
        "CrlPolicy",
        "PublishedCrl",
        "current_crls",
        "publish_crl",
        "publish_tenant_crls",
        "refresh_all_crls",
    ],
    "bastion.service.ca.revocation": [
        "certificate_revoked",
        "device_certificates",
        "revoke_device_certificates",
        "revoked_entries",
    ],
    "bastion.service.ca.rotation": [
        "DEFAULT_OVERLAP",
        "MAX_OVERLAP",
        "MAX_TRUSTED_CAS",
        "RotationResult",
        "list_authorities",
        "rotate_tenant_ca",
    ],
    "bastion.service.vendors.service": ["TrustResult", "list_vendors", "trust_vendor", "trusted_vendor_certs"],
    "bastion.service.auth.deps": ["AdminDep", "ContributorDep", "Principal", "ReaderDep", "require_role"],
    "bastion.service.auth.limits": [
        "DEFAULT_AUTH_LIMITS",
        "MAX_TOKEN_LIFETIME_DAYS",
        "AuthLimits",
        "AuthLimitsDep",
        "get_auth_limits",
    ],
    "bastion.service.auth.failures": [
        "REASONS",
        "count_auth_failures",
        "list_auth_failures",
        "record_auth_failure",
        "window_start",
    ],
    "bastion.service.db": [
        "MIGRATIONS_DIR",
        "alembic_config",
        "create_engine_for",
        "make_sessionmaker",
        "migrate",
        "writer_lock",
    ],
    "bastion.service.config": ["HttpLimits", "Limits", "Settings", "load_or_create_master_key", "write_private_file"],
    "bastion.service.http_server": ["MAX_HEADER_BYTES", "BoundedHttpToolsProtocol", "header_too_large_response"],
    "bastion.service.audit.service": [
        "NOT_IN_TENANT",
        "list_events",
        "record",
        "record_denied",
        "record_not_found",
    ],
    "bastion.service.guard": [
        "REFUSAL_LOG_INTERVAL_S",
        "RateLimiter",
        "RefusalLog",
        "check_headers",
        "client_key",
        "send_error",
    ],
    "bastion.service.openapi": [
        "ERROR_SCHEMA_NAME",
        "SECURITY_SCHEME_NAME",
        "MethodIndex",
        "authenticated_operations",
        "complete_schema",
    ],
    "bastion.service.web": [
        "MAX_LIST_OFFSET",
        "BodyLimitMiddleware",
        "Clock",
        "LimitQuery",
        "NowDep",
        "OffsetQuery",
        "SessionDep",
        "SettingsDep",
        "error_response",
        "get_now",
        "get_session",
        "get_settings",
        "utc_now",
    ],
    "bastion.service.errorreports.fingerprint": [
        "ALGORITHM",
        "MAX_IN_APP_FRAMES",
        "Fingerprint",
        "bucket_id",
        "fingerprint",
    ],
    "bastion.service.errorreports.ingest": [
        "Accepted",
        "LogRequest",
        "PendingLogRequests",
        "accept_batch",
        "accept_group",
        "check_batch",
        "no_log_requests",
    ],
    "bastion.service.errorreports.store": ["MAX_GROUP", "Checked", "store_group"],
    "bastion.service.errorreports.ingest_queue": [
        "BUSY_RETRY_AFTER_S",
        "INGEST_THREADS",
        "MAX_WAITING",
        "MAX_WAITING_MALFORMED",
        "IngestBusyError",
        "IngestQueue",
    ],
    "bastion.service.errorreports.bucket_counts": [
        "MAX_BUCKET_REHOMES",
        "Contribution",
        "GroupConflictError",
        "count_in",
        "dialect_insert",
        "statement",
        "ts",
    ],
    "bastion.service.errorreports.activity": ["OS_COMPONENT", "ActivityEntry", "record_activities", "record_activity"],
    "bastion.service.macnonce": [
        "KEY_BYTES",
        "NONCE_BYTES",
        "NONCE_MAC_BYTES",
        "NONCE_RANDOM_BYTES",
        "derive_key",
        "expiry_after",
        "make_nonce",
        "nonce_mac",
        "read_nonce",
    ],
    "bastion.service.periodic": [
        "DEFAULT_JITTER",
        "STOP_GRACE_S",
        "PeriodicTask",
        "describe_failure",
        "next_delay",
        "periodic",
        "run_periodically",
    ],
    "bastion.service.errorreports.bucket_cap": [
        "CAP_ACTION",
        "OVERFLOW_FINGERPRINT",
        "cap_new_buckets",
        "overflow_bucket_id",
    ],
    "bastion.service.errorreports.retention": ["Pruned", "prune_once", "retention_runner"],
    "bastion.service.rollouts.rules": [
        "DEFAULT_CRASH_DROP_POINTS",
        "DEFAULT_MIN_SAMPLE",
        "LIVE_STATES",
        "MAX_SAMPLE",
        "MAX_SOAK_SECONDS",
        "MAX_STAGES",
        "STAGED_STATES",
        "HaltRules",
        "RolloutPlan",
        "RolloutState",
        "parse_plan",
    ],
    "bastion.service.rollouts.service": [
        "BASELINE_WINDOW",
        "GATE_ACTOR",
        "MAX_GROUP_DEVICES",
        "MAX_HISTORY",
        "Outcome",
        "Release",
        "StageReport",
        "abort",
        "create_for_deployment",
        "create_for_os",
        "evaluate",
        "get_rollout_for",
        "releases",
        "resume",
        "stage_members",
        "stage_reports",
        "supersede",
    ],
    "bastion.service.rollouts.gate": [
        "MAX_GATE_INTERVAL_S",
        "MAX_ROLLOUTS_PER_PASS",
        "ROLLOUT_GATE_INTERVAL_S",
        "evaluate_due",
        "gate_interval_from_env",
        "rollout_gate",
    ],
    "bastion.service.rollouts.health": [
        "HealthDep",
        "HealthSource",
        "ReleaseHealthView",
        "default_health",
        "get_health",
    ],
    "bastion.service.errorreports.health": [
        "APP_CRASH_CATEGORIES",
        "MAX_DEVICE_IDS_PER_QUERY",
        "MAX_FLEET_HEALTH_ROWS",
        "OS_COMPONENT",
        "FleetHealthRow",
        "ReleaseHealth",
        "fleet_health",
        "new_buckets",
        "release_health",
    ],
    "bastion.service.errorreports.log_requests": [
        "DEFAULT_LOG_REQUEST_SETTINGS",
        "MAX_LOG_TEXT_BYTES",
        "LogRequestSettings",
        "LogUploaded",
        "accept_upload",
        "create_request",
        "get_request",
        "list_requests",
        "pending_for",
    ],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_names(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(EXPECTED[module])
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_errors_tree() -> None:
    from bastion.service import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.ServiceError)
        assert cls.__doc__
        assert name in errors.__doc__  # drawn in the tree
