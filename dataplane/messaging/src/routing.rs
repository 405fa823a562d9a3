//! The target of a send that omits `esme`: the first [`Route`] of the
//! configuration in force that the message matches
//! ([`smsgw_crds::RouteTable`]), compiled once per configuration version.
//!
//! [`Route`]: smsgw_crds::Route

use crate::MessagingError;
use crate::service::Messaging;
use arc_swap::ArcSwapOption;
use smsgw_crds::{RouteQuery, RouteTable, Snapshot};
use std::sync::Arc;

/// The route table of one configuration version.
pub(crate) struct CompiledRoutes {
    version: String,
    table: RouteTable,
}

/// The table compiled from the last configuration a send needed it for.
#[derive(Default)]
pub(crate) struct RouteCache(ArcSwapOption<CompiledRoutes>);

impl RouteCache {
    /// The table of `config`, compiled when its version is new.
    fn table(&self, config: &Snapshot) -> Arc<CompiledRoutes> {
        if let Some(c) = self.0.load_full()
            && c.version == config.version
        {
            return c;
        }
        let c = Arc::new(CompiledRoutes {
            version: config.version.clone(),
            table: RouteTable::compile(&config.routes),
        });
        self.0.store(Some(c.clone()));
        c
    }
}

impl Messaging {
    /// The link or pool a message without `esme` goes to: the first route
    /// it matches now. No routes configured → `invalid_esme` (as before
    /// routes existed); routes but no match → `no_route`.
    pub(crate) fn route(
        &self,
        config: &Snapshot,
        q: &RouteQuery<'_>,
    ) -> Result<String, MessagingError> {
        let routes = self.routes.table(config);
        if routes.table.is_empty() {
            return Err(MessagingError::refused(
                "invalid_esme",
                "esme: is required (a link or pool name); no Route is configured to choose one",
            ));
        }
        match routes.table.choose(q, jiff::Timestamp::now()) {
            Some(c) => Ok(c.target.to_owned()),
            None => Err(MessagingError::refused(
                "no_route",
                format!(
                    "esme: omitted and no Route matches destination {:?}, source {:?} and this app now; name a link or pool, or add a default Route",
                    q.destination, q.source
                ),
            )),
        }
    }
}
