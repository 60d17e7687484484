//! Reading the audit log and verifying its chain. Writing happens in each use case's own
//! transaction through `crate::audit::append`, never from here.

use crate::domain::page::{Page, PageRequest};
use crate::{
    audit::{self, Verdict},
    domain::audit::{AuditEntry, AuditFilter},
    store::{self},
};

use super::{Result, Services};

impl Services {
    /// Entries matching `filter`, newest first; cursors are seqs.
    pub async fn audit_log(&self, filter: &AuditFilter, page: &PageRequest<i64>) -> Result<Page<AuditEntry>> {
        Ok(store::audit::page(self.db.connection(), filter, page).await?)
    }

    /// Walks the whole chain; `progress(checked, total)` hears after every batch.
    pub async fn verify_audit_chain(&self, progress: impl FnMut(u64, u64)) -> Result<Verdict> {
        Ok(audit::verify(self.db.connection(), progress).await?)
    }
}
