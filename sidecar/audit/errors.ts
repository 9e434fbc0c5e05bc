/** An audit event could not be recorded, and the check must not go ahead without it. */
export class AuditUnavailable extends Error {}
