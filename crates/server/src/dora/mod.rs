//! DORA metrics (docs/dora.md): the durable per-tenant store of deployment, incident and change
//! events extracted at ingest ([`store`]), the HTTP API over it ([`api`]), and the
//! change-failure hints computed from stored spans ([`hints`]). The model itself (extraction,
//! definitions, levels, series) is `spoor_generate::dora`.

pub mod api;
pub mod config;
pub mod hints;
pub mod store;
