"""Security: identities and tokens, the policy (who may do what on which project), the audit trail."""
