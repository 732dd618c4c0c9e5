"""Who may do what: roles map to permissions, and grants narrow them to a site or to projects.

Deny by default: a permission not listed for a role is refused, and a project-scoped read is refused
unless the project is granted to the token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from medcloud.errors import Forbidden

# Appended to the audit subject of every act done with an opened break-glass account.
BREAK_GLASS_MARK = "!break-glass"


class Role(str, Enum):
    SITE = "site"
    RESEARCHER = "researcher"
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    ADMIN = "admin"
    # Issued by the hub to one running job: read that job's dataset version, write that job's artefacts.
    JOB = "job"


class Permission(str, Enum):
    INGEST = "ingest"  # upload images as one's own site
    CATALOG_READ = "catalog.read"  # query studies/series/instances/images metadata
    BYTES_READ = "bytes.read"  # fetch image bytes
    SITES_READ = "sites.read"  # collection progress per site
    SITES_MANAGE = "sites.manage"  # set targets, register sites
    TOKENS_MANAGE = "tokens.manage"  # create / list / revoke tokens
    AUDIT_READ = "audit.read"  # read and verify the audit trail
    INFER = "infer"  # run a served model on an image
    MODELS_READ = "models.read"  # list models in the registry
    FL_PARTICIPATE = "fl.participate"  # join federated rounds as a site
    FL_AGGREGATE = "fl.aggregate"  # run the aggregator and record its rounds
    DATASETS_WRITE = "datasets.write"  # save cohorts and freeze dataset versions in granted projects
    RESULTS_WRITE = "results.write"  # store AI results (SR/SEG) beside source studies of granted projects
    JOBS_RUN = "jobs.run"  # submit, watch and cancel jobs on dataset versions of granted projects
    JOB_RUNTIME = "job.runtime"  # a running job: its own dataset version and its own artefacts, nothing else
    SELF_CHECK = "security.self-check"  # run the MHLW self-check over the running deployment
    AUDIT_KEY_ROTATE = "audit.key.rotate"  # replace the audit log's signing key


# Administrative acts: a person's session needs a recent passkey for these (step-up, `hub.deps.require`).
STEP_UP_PERMISSIONS = frozenset(
    {
        Permission.TOKENS_MANAGE,
        Permission.SITES_MANAGE,
        Permission.FL_AGGREGATE,
        Permission.AUDIT_READ,
        Permission.SELF_CHECK,
        Permission.AUDIT_KEY_ROTATE,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.SITE: frozenset({Permission.INGEST, Permission.FL_PARTICIPATE}),
    Role.RESEARCHER: frozenset(
        {
            Permission.CATALOG_READ,
            Permission.BYTES_READ,
            Permission.SITES_READ,
            Permission.MODELS_READ,
            Permission.DATASETS_WRITE,
            Permission.RESULTS_WRITE,
            Permission.JOBS_RUN,
        }
    ),
    Role.CLINICIAN: frozenset({Permission.INFER, Permission.MODELS_READ}),
    # The auditor reviews the log and runs the regular self-audit of the deployment (MHLW guideline:
    # audits are the auditor's), but changes nothing.
    Role.AUDITOR: frozenset({Permission.AUDIT_READ, Permission.SELF_CHECK}),
    # Administrators run the platform but do not read images: a person who needs data gets a
    # researcher token, and issuing it is itself an audit event.
    Role.ADMIN: frozenset(
        {
            Permission.TOKENS_MANAGE,
            Permission.SITES_MANAGE,
            Permission.SITES_READ,
            Permission.MODELS_READ,
            Permission.FL_AGGREGATE,
            Permission.SELF_CHECK,
            Permission.AUDIT_KEY_ROTATE,
        }
    ),
    Role.JOB: frozenset({Permission.JOB_RUNTIME}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's id (never its secret), role and grants."""

    token_id: str
    role: Role
    site: str | None = None
    projects: frozenset[str] = field(default_factory=frozenset)
    label: str = ""
    expires_at: datetime | None = None
    # A job token's scope: the one job and the one dataset version it may touch (None for other roles).
    job: str | None = None
    dataset: str | None = None
    # A break-glass account's name (`security.breakglass`): every act is marked in the audit trail.
    break_glass: str | None = None
    # 'machine' (issued by hand or by the hub to a process) or 'session' (a person signed in through the
    # hospital's identity provider); `person` is that provider's subject, `mfa_at` when the session
    # passed its second factor (None: not yet).
    kind: str = "machine"
    person: str | None = None
    mfa_at: datetime | None = None

    @property
    def subject(self) -> str:
        """How the caller appears in the audit trail (a break-glass account ends in BREAK_GLASS_MARK)."""
        where = f"@{self.site}" if self.site else ""
        mark = BREAK_GLASS_MARK if self.break_glass else ""
        return f"{self.role.value}{where}:{self.token_id}{mark}"

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.can(permission):
            raise Forbidden(f"role '{self.role.value}' may not {permission.value}")

    def readable_projects(self) -> frozenset[str] | None:
        """Projects whose catalog this caller may read; None means every project (admin metadata)."""
        if self.role is Role.ADMIN:
            return None
        return self.projects

    def require_project(self, project: str) -> None:
        allowed = self.readable_projects()
        if allowed is not None and project not in allowed:
            raise Forbidden(f"project '{project}' is not granted to this token")

    def require_job(self, job_id: str) -> None:
        """A job token acts for its own job only; other roles are checked by permission and project."""
        if self.role is Role.JOB and self.job != job_id:
            raise Forbidden("this job token belongs to another job")

    def require_dataset(self, dataset_id: str) -> None:
        """A job token reads the one dataset version it was given."""
        if self.role is Role.JOB and self.dataset != dataset_id:
            raise Forbidden("this job token may read only the dataset version of its job")
