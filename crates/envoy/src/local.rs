//! Which local endpoint answers a request: the developer portal under `portal.path`, the admin
//! API and usage dashboard under `admin.path`. Both hosts ask here before `admit`, and only when
//! the configuration has any local endpoint ([`any`]).

use mlgate_core::admit::Request;
use mlgate_core::local::{under, LocalHost};
use mlgate_core::model::Gateway;
use mlgate_core::reply::Reply;

/// The local reply for `req`, or `None` when it is not a local endpoint's (then it goes
/// through `admit` as every request does).
pub fn serve(gw: &Gateway, req: &Request<'_>, now_ms: u64, host: &mut dyn LocalHost) -> Option<Reply> {
    if let Some(portal) = &gw.portal {
        if under(req.path, &portal.path) {
            return Some(mlgate_portal::serve(gw, portal, req, now_ms, host));
        }
    }
    if let Some(admin) = &gw.admin {
        if under(req.path, &admin.path) {
            return Some(mlgate_admin::serve(gw, admin, req, now_ms, host));
        }
    }
    None
}

/// Whether the configuration has any local endpoint. Without one the host never calls
/// [`serve`]: the request path pays this one check.
pub fn any(gw: &Gateway) -> bool {
    gw.portal.is_some() || gw.admin.is_some()
}
