//! The REST surface, as Google's Compute Engine v1 reference gives it:
//! paths under `/compute/v1/projects/{project}`, JSON bodies in
//! camelCase, 64-bit integers as decimal strings, errors as
//! `{"error": {"code", "message", "errors": [{"reason", "message"}]}}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::filter::Filter;
use crate::world::{CallFault, FakeInstance, Provisioning, Scope, World};

pub(crate) type Shared = Arc<Mutex<World>>;

/// Project, region or zone, operation name.
type OperationPath = (String, String, String);

pub(crate) fn router(world: Shared) -> Router {
    Router::new()
        .route(
            "/compute/v1/projects/{project}/regions/{region}/instances/bulkInsert",
            post(bulk_insert),
        )
        .route(
            "/compute/v1/projects/{project}/regions/{region}/operations/{operation}",
            get(
                |s: State<Shared>, Path(p): Path<OperationPath>| async move {
                    operation_answer(
                        &s,
                        "regionOperations.get",
                        Scope::Region(p.1),
                        &p.0,
                        &p.2,
                        false,
                    )
                    .await
                },
            ),
        )
        .route(
            "/compute/v1/projects/{project}/regions/{region}/operations/{operation}/wait",
            post(
                |s: State<Shared>, Path(p): Path<OperationPath>| async move {
                    operation_answer(
                        &s,
                        "regionOperations.wait",
                        Scope::Region(p.1),
                        &p.0,
                        &p.2,
                        true,
                    )
                    .await
                },
            ),
        )
        .route(
            "/compute/v1/projects/{project}/zones/{zone}/operations/{operation}",
            get(
                |s: State<Shared>, Path(p): Path<OperationPath>| async move {
                    operation_answer(
                        &s,
                        "zoneOperations.get",
                        Scope::Zone(p.1),
                        &p.0,
                        &p.2,
                        false,
                    )
                    .await
                },
            ),
        )
        .route(
            "/compute/v1/projects/{project}/zones/{zone}/operations/{operation}/wait",
            post(
                |s: State<Shared>, Path(p): Path<OperationPath>| async move {
                    operation_answer(
                        &s,
                        "zoneOperations.wait",
                        Scope::Zone(p.1),
                        &p.0,
                        &p.2,
                        true,
                    )
                    .await
                },
            ),
        )
        .route(
            "/compute/v1/projects/{project}/zones/{zone}/operations",
            get(list_zone_operations),
        )
        .route(
            "/compute/v1/projects/{project}/aggregated/instances",
            get(aggregated_list),
        )
        .route(
            "/compute/v1/projects/{project}/zones/{zone}/instances",
            post(insert),
        )
        .route(
            "/compute/v1/projects/{project}/zones/{zone}/instances/{name}",
            get(get_instance).delete(delete_instance),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            world.clone(),
            authorize,
        ))
        .route("/token", post(token))
        .with_state(world)
}

/// The OAuth2 token endpoint an `authorized_user` credentials file names
/// as its `token_uri`: it hands out an access token for a refresh token,
/// as Google's does, so the scheduler's real credential flow is exercised.
async fn token(State(world): State<Shared>, body: Option<Json<Value>>) -> Response {
    let mut w = world.lock().await;
    *w.calls.entry("token").or_default() += 1;
    let grant = body
        .as_ref()
        .and_then(|b| b.get("grant_type"))
        .and_then(Value::as_str);
    let refresh = body
        .as_ref()
        .and_then(|b| b.get("refresh_token"))
        .and_then(Value::as_str);
    if grant != Some("refresh_token") || refresh.is_none_or(str::is_empty) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "a refresh_token grant is required"})),
        )
            .into_response();
    }
    let token = format!("fake-access-{}", w.next_id());
    w.access_tokens.push(token.clone());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})).into_response()
}

/// Once the token endpoint has issued a token, a call without a valid
/// `Authorization: Bearer` header is refused with a 401, as Compute Engine
/// refuses it (before that, anonymous calls are taken: the provider's own
/// tests use anonymous credentials).
async fn authorize(
    State(world): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let allowed = {
        let w = world.lock().await;
        w.access_tokens.is_empty() || presented.is_some_and(|t| w.access_tokens.contains(&t))
    };
    if !allowed {
        return error(
            401,
            "authError",
            "Request is missing required authentication credential.",
        );
    }
    next.run(request).await
}

/// An error answer in Compute Engine's shape.
pub(crate) struct ApiError {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            Json(json!({"error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"reason": self.reason, "message": self.message, "domain": "global"}],
            }})),
        )
            .into_response()
    }
}

fn refuse(status: u16, reason: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        reason: reason.to_string(),
        message: message.into(),
    }
}

fn error(status: u16, reason: &str, message: impl Into<String>) -> Response {
    refuse(status, reason, message).into_response()
}

fn fault(f: CallFault) -> Response {
    let message = match f.reason.as_str() {
        "rateLimitExceeded" => "Rate Limit Exceeded".to_string(),
        other => format!("injected fault: {other}"),
    };
    error(f.status, &f.reason, message)
}

/// Refuses a request for another project or region than the fake's.
fn check_scope(
    w: &World,
    project: &str,
    region: Option<&str>,
    zone: Option<&str>,
) -> Option<Response> {
    if project != w.project {
        return Some(error(
            404,
            "notFound",
            format!("The resource 'projects/{project}' was not found"),
        ));
    }
    if let Some(r) = region
        && r != w.region
    {
        return Some(error(
            404,
            "notFound",
            format!("The resource 'projects/{project}/regions/{r}' was not found"),
        ));
    }
    if let Some(z) = zone
        && !w.zones.iter().any(|k| k == z)
    {
        return Some(error(
            404,
            "notFound",
            format!("The resource 'projects/{project}/zones/{z}' was not found"),
        ));
    }
    None
}

/// A 64-bit integer as the API writes it (a decimal string) or as a
/// lenient client might (a number).
fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn last(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

fn labels_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_of(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(|m| m.get("items"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    Some((
                        i.get("key")?.as_str()?.to_string(),
                        i.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct RequestId {
    #[serde(rename = "requestId")]
    request_id: Option<String>,
}

async fn bulk_insert(
    State(world): State<Shared>,
    Path((project, region)): Path<(String, String)>,
    Query(q): Query<RequestId>,
    body: Option<Json<Value>>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("bulkInsert") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, Some(&region), None) {
        return e;
    }
    let now = Instant::now();
    if let Some(id) = &q.request_id
        && let Some(existing) = w.request_ids.get(id).cloned()
        && let Some(op) = w.operations.get(&existing)
    {
        return Json(w.operation_json(op, now)).into_response();
    }
    let Some(Json(body)) = body else {
        return error(400, "required", "Required field 'resource' not specified");
    };
    match plan_bulk_insert(&mut w, &body, now) {
        Ok(name) => {
            if let Some(id) = q.request_id {
                w.request_ids.insert(id, name.clone());
            }
            let Some(op) = w.operations.get(&name) else {
                return error(500, "backendError", "operation vanished");
            };
            Json(w.operation_json(op, now)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Validates a bulk insert and either places the whole batch or records
/// why not in its operation (Compute Engine accepts the call and fails the
/// operation for stockouts and quotas).
fn plan_bulk_insert(w: &mut World, body: &Value, now: Instant) -> Result<String, ApiError> {
    let invalid = |field: &str, why: &str| {
        refuse(
            400,
            "invalid",
            format!("Invalid value for field 'resource.{field}': {why}"),
        )
    };
    let count =
        int(body.get("count")).ok_or_else(|| invalid("count", "a positive count is required"))?;
    let min_count = int(body.get("minCount")).unwrap_or(count);
    let names: Vec<String> = body
        .get("perInstanceProperties")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .ok_or_else(|| {
            invalid(
                "perInstanceProperties",
                "this fake needs a name per instance (namePattern is not supported)",
            )
        })?;
    if usize::try_from(count).ok() != Some(names.len()) || count < 1 {
        return Err(invalid(
            "count",
            &format!(
                "{count} does not match the {} perInstanceProperties",
                names.len()
            ),
        ));
    }
    if !(1..=count).contains(&min_count) {
        return Err(invalid(
            "minCount",
            &format!("{min_count} must be between 1 and count {count}"),
        ));
    }
    if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
        return Err(invalid(
            &format!("perInstanceProperties.{bad}"),
            "must match [a-z]([-a-z0-9]*[a-z0-9])?",
        ));
    }
    if let Some(dup) = names
        .iter()
        .find(|n| w.instances.keys().any(|(_, name)| name == *n))
    {
        return Err(refuse(
            409,
            "alreadyExists",
            format!("The resource '{dup}' already exists"),
        ));
    }
    let props = body
        .get("instanceProperties")
        .cloned()
        .unwrap_or(Value::Null);
    let template = body.get("sourceInstanceTemplate").and_then(Value::as_str);
    let ranked: Vec<String> = {
        let mut selections: Vec<(i64, String)> = body
            .pointer("/instanceFlexibilityPolicy/instanceSelections")
            .and_then(Value::as_object)
            .map(|m| {
                m.values()
                    .flat_map(|s| {
                        let rank = int(s.get("rank")).unwrap_or(i64::MAX);
                        s.get("machineTypes")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str())
                            .map(move |t| (rank, t.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        selections.sort();
        let mut types: Vec<String> = selections.into_iter().map(|(_, t)| t).collect();
        if let Some(t) = props.get("machineType").and_then(Value::as_str) {
            types.push(t.to_string());
        }
        types
    };
    let Some(machine_type) = ranked.first().cloned() else {
        if template.is_some() {
            return Err(invalid(
                "instanceProperties.machineType",
                "the fake's templates carry no machine type; give one",
            ));
        }
        return Err(invalid("instanceProperties.machineType", "required"));
    };
    if !machine_type.contains('-')
        || !machine_type
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "instanceProperties.machineType",
            &format!("'{machine_type}' is not a machine type"),
        ));
    }
    let provisioning = match props
        .pointer("/scheduling/provisioningModel")
        .and_then(Value::as_str)
    {
        Some("SPOT") => Provisioning::Spot,
        None | Some("STANDARD") => Provisioning::Standard,
        Some(other) => {
            return Err(invalid(
                "instanceProperties.scheduling.provisioningModel",
                &format!("'{other}'"),
            ));
        }
    };
    let locations = body
        .pointer("/locationPolicy/locations")
        .and_then(Value::as_object);
    for key in locations.into_iter().flat_map(|m| m.keys()) {
        let zone = key.strip_prefix("zones/").unwrap_or(key);
        if !w.zones.iter().any(|z| z == zone) {
            return Err(invalid(
                &format!("locationPolicy.locations.{key}"),
                "not a zone of this region",
            ));
        }
    }
    let allowed: Vec<String> = w
        .zones
        .iter()
        .filter(|z| {
            locations.is_none_or(|m| {
                m.get(&format!("zones/{z}"))
                    .is_some_and(|l| l.get("preference").and_then(Value::as_str) != Some("DENY"))
            })
        })
        .cloned()
        .collect();
    if allowed.is_empty() {
        return Err(invalid("locationPolicy", "every zone is denied"));
    }
    let single_zone = body
        .pointer("/locationPolicy/targetShape")
        .and_then(Value::as_str)
        == Some("ANY_SINGLE_ZONE");
    let region_link = format!("{}/regions/{}", w.base(), w.region);
    let count_u = u32::try_from(count).unwrap_or(u32::MAX);
    let min_u = u32::try_from(min_count).unwrap_or(u32::MAX);

    if let Some(code) = (!w.operation_faults.is_empty()).then(|| w.operation_faults.remove(0)) {
        let errors =
            vec![json!({"code": code, "message": format!("injected operation failure {code}")})];
        return Ok(w.new_operation(
            Scope::Region(w.region.clone()),
            "bulkInsert",
            region_link,
            errors,
            None,
            now,
        ));
    }
    if let Some(quota) = w.quota
        && u32::try_from(w.alive()).unwrap_or(u32::MAX) + min_u > quota
    {
        let errors = vec![json!({
            "code": "QUOTA_EXCEEDED",
            "location": format!("regions/{}", w.region),
            "message": format!("Quota 'INSTANCES' exceeded. Limit: {quota} in region {}.", w.region),
        })];
        return Ok(w.new_operation(
            Scope::Region(w.region.clone()),
            "bulkInsert",
            region_link,
            errors,
            None,
            now,
        ));
    }
    let room = |w: &World, zone: &str| {
        w.capacity
            .get(&(zone.to_string(), provisioning))
            .copied()
            .unwrap_or(u32::MAX)
    };
    // Where the batch goes: one zone that takes it all (or at least
    // minCount), or spread over the zones in order.
    let mut placement: Vec<(String, u32)> = Vec::new();
    if single_zone {
        if let Some(zone) = allowed.iter().find(|z| room(w, z) >= min_u) {
            placement.push((zone.clone(), count_u.min(room(w, zone))));
        }
    } else {
        let mut left = count_u;
        for zone in &allowed {
            let take = left.min(room(w, zone));
            if take > 0 {
                placement.push((zone.clone(), take));
                left -= take;
            }
        }
        if count_u - left < min_u {
            placement.clear();
        }
    }
    let mut per_location = serde_json::Map::new();
    if placement.is_empty() {
        let errors: Vec<Value> = allowed
            .iter()
            .map(|z| {
                json!({
                    "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                    "location": format!("zones/{z}"),
                    "message": format!("The zone 'projects/{}/zones/{z}' does not have enough resources available to fulfill the request. Try a different zone, or try again later.", w.project),
                })
            })
            .collect();
        for z in &allowed {
            per_location.insert(
                format!("zones/{z}"),
                json!({"status": "FAILED", "targetVmCount": count, "createdVmCount": 0, "failedToCreateVmCount": count, "deletedVmCount": 0}),
            );
        }
        return Ok(w.new_operation(
            Scope::Region(w.region.clone()),
            "bulkInsert",
            region_link,
            errors,
            Some(Value::Object(per_location)),
            now,
        ));
    }
    let labels = labels_of(props.get("labels"));
    let metadata = metadata_of(props.get("metadata"));
    let scheduling = props
        .get("scheduling")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut names = names.into_iter();
    for (zone, n) in &placement {
        if let Some(c) = w.capacity.get_mut(&(zone.clone(), provisioning)) {
            *c -= n;
        }
        for name in names
            .by_ref()
            .take(usize::try_from(*n).unwrap_or(usize::MAX))
        {
            let id = w.next_id();
            w.instances.insert(
                (zone.clone(), name.clone()),
                FakeInstance {
                    id,
                    name,
                    zone: zone.clone(),
                    machine_type: last(&machine_type).to_string(),
                    labels: labels.clone(),
                    metadata: metadata.clone(),
                    scheduling: scheduling.clone(),
                    created: now,
                    deleting_at: None,
                },
            );
        }
        per_location.insert(
            format!("zones/{zone}"),
            json!({"status": "DONE", "targetVmCount": n, "createdVmCount": n, "failedToCreateVmCount": 0, "deletedVmCount": 0}),
        );
    }
    Ok(w.new_operation(
        Scope::Region(w.region.clone()),
        "bulkInsert",
        region_link,
        Vec::new(),
        Some(Value::Object(per_location)),
        now,
    ))
}

async fn operation_answer(
    world: &Shared,
    method: &'static str,
    scope: Scope,
    project: &str,
    name: &str,
    wait: bool,
) -> Response {
    let deadline = {
        let w = world.lock().await;
        Instant::now() + w.timing.wait_at_most
    };
    {
        let mut w = world.lock().await;
        if let Some(f) = w.call(method) {
            return fault(f);
        }
        let (region, zone) = match &scope {
            Scope::Region(r) => (Some(r.as_str()), None),
            Scope::Zone(z) => (None, Some(z.as_str())),
        };
        if let Some(e) = check_scope(&w, project, region, zone) {
            return e;
        }
    }
    loop {
        let now = Instant::now();
        {
            let w = world.lock().await;
            let Some(op) = w.operations.get(name).filter(|op| op.scope == scope) else {
                return error(
                    404,
                    "notFound",
                    format!(
                        "The resource 'projects/{project}/.../operations/{name}' was not found"
                    ),
                );
            };
            let answer = w.operation_json(op, now);
            let done = answer.get("status").and_then(Value::as_str) == Some("DONE");
            if !wait || done || now >= deadline {
                return Json(answer).into_response();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "maxResults")]
    max_results: Option<String>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// The page of `all` a list call asks for, and the token of the next.
fn page<T: Clone>(all: &[T], q: &ListQuery) -> Result<(Vec<T>, Option<String>), ApiError> {
    let size: usize = match q.max_results.as_deref() {
        None => 500,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => {
                return Err(refuse(
                    400,
                    "invalid",
                    format!(
                        "Invalid value for field 'maxResults': '{s}'. Must be between 0 and 500"
                    ),
                ));
            }
        },
    };
    let start: usize = match q.page_token.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("page-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                refuse(
                    400,
                    "invalid",
                    format!("Invalid value for field 'pageToken': '{t}'"),
                )
            })?,
    };
    let end = (start + size).min(all.len());
    let next = (end < all.len()).then(|| format!("page-{end}"));
    Ok((all.get(start..end).unwrap_or_default().to_vec(), next))
}

async fn aggregated_list(
    State(world): State<Shared>,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("aggregatedList") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, None, None) {
        return e;
    }
    let filter = match Filter::parse(q.filter.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(why) => {
            return error(
                400,
                "invalid",
                format!("Invalid value for field 'filter': {why}"),
            );
        }
    };
    let now = Instant::now();
    w.purge(now);
    let matching: Vec<(String, Value)> = w
        .instances
        .values()
        .map(|i| (i.zone.clone(), w.instance_json(i, now)))
        .filter(|(_, v)| filter.matches(v))
        .collect();
    let (items, next) = match page(&matching, &q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut by_zone = serde_json::Map::new();
    for zone in &w.zones {
        let here: Vec<&Value> = items
            .iter()
            .filter(|(z, _)| z == zone)
            .map(|(_, v)| v)
            .collect();
        let scoped = if here.is_empty() {
            json!({"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are no results for scope 'zones/...' on this page."}})
        } else {
            json!({"instances": here})
        };
        by_zone.insert(format!("zones/{zone}"), scoped);
    }
    let mut answer = json!({"kind": "compute#instanceAggregatedList", "id": format!("projects/{project}/aggregated/instances"), "items": by_zone});
    if let Some(next) = next {
        answer["nextPageToken"] = json!(next);
    }
    Json(answer).into_response()
}

async fn insert(
    State(world): State<Shared>,
    Path((project, zone)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("insert") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, None, Some(&zone)) {
        return e;
    }
    let Some(Json(body)) = body else {
        return error(400, "required", "Required field 'resource' not specified");
    };
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .map(str::to_string)
    else {
        return error(
            400,
            "invalid",
            "Invalid value for field 'resource.name': must match [a-z]([-a-z0-9]*[a-z0-9])?",
        );
    };
    let Some(machine_type) = body
        .get("machineType")
        .and_then(Value::as_str)
        .map(|t| last(t).to_string())
    else {
        return error(
            400,
            "required",
            "Required field 'resource.machineType' not specified",
        );
    };
    if w.instances.contains_key(&(zone.clone(), name.clone())) {
        return error(
            409,
            "alreadyExists",
            format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            ),
        );
    }
    let now = Instant::now();
    let id = w.next_id();
    w.instances.insert(
        (zone.clone(), name.clone()),
        FakeInstance {
            id,
            name: name.clone(),
            zone: zone.clone(),
            machine_type,
            labels: labels_of(body.get("labels")),
            metadata: metadata_of(body.get("metadata")),
            scheduling: body.get("scheduling").cloned().unwrap_or_else(|| json!({})),
            created: now,
            deleting_at: None,
        },
    );
    let link = format!("{}/zones/{zone}/instances/{name}", w.base());
    let op = w.new_operation(Scope::Zone(zone), "insert", link, Vec::new(), None, now);
    match w.operations.get(&op) {
        Some(op) => Json(w.operation_json(op, now)).into_response(),
        None => error(500, "backendError", "operation vanished"),
    }
}

async fn get_instance(
    State(world): State<Shared>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("get") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, None, Some(&zone)) {
        return e;
    }
    let now = Instant::now();
    w.purge(now);
    match w.instances.get(&(zone.clone(), name.clone())) {
        Some(i) => Json(w.instance_json(i, now)).into_response(),
        None => error(
            404,
            "notFound",
            format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found"
            ),
        ),
    }
}

async fn delete_instance(
    State(world): State<Shared>,
    Path((project, zone, name)): Path<(String, String, String)>,
    Query(q): Query<RequestId>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("delete") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, None, Some(&zone)) {
        return e;
    }
    let now = Instant::now();
    if let Some(id) = &q.request_id
        && let Some(existing) = w.request_ids.get(id).cloned()
        && let Some(op) = w.operations.get(&existing)
    {
        return Json(w.operation_json(op, now)).into_response();
    }
    w.purge(now);
    let done_after = w.timing.done_after;
    let Some(i) = w.instances.get_mut(&(zone.clone(), name.clone())) else {
        return error(
            404,
            "notFound",
            format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found"
            ),
        );
    };
    if i.deleting_at.is_none() {
        i.deleting_at = Some(now + done_after);
    }
    let link = format!("{}/zones/{zone}/instances/{name}", w.base());
    let op = w.new_operation(Scope::Zone(zone), "delete", link, Vec::new(), None, now);
    if let Some(id) = q.request_id {
        w.request_ids.insert(id, op.clone());
    }
    match w.operations.get(&op) {
        Some(op) => Json(w.operation_json(op, now)).into_response(),
        None => error(500, "backendError", "operation vanished"),
    }
}

/// Zone operations, filtered by `operationType` only (what the reconciler
/// asks to find preemptions).
async fn list_zone_operations(
    State(world): State<Shared>,
    Path((project, zone)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut w = world.lock().await;
    if let Some(f) = w.call("zoneOperations.list") {
        return fault(f);
    }
    if let Some(e) = check_scope(&w, &project, None, Some(&zone)) {
        return e;
    }
    let wanted_type = match q.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(f) => match f
            .strip_prefix("operationType")
            .map(str::trim)
            .and_then(|r| r.strip_prefix('='))
        {
            Some(v) => Some(v.trim().trim_matches('"').to_string()),
            None => {
                return error(
                    400,
                    "invalid",
                    format!(
                        "Invalid value for field 'filter': this fake lists operations by operationType only, not {f:?}"
                    ),
                );
            }
        },
    };
    let now = Instant::now();
    let mut ops: Vec<&crate::world::FakeOperation> = w
        .operations
        .values()
        .filter(|op| op.scope == Scope::Zone(zone.clone()))
        .filter(|op| wanted_type.as_ref().is_none_or(|t| &op.operation_type == t))
        .collect();
    ops.sort_by_key(|op| op.id);
    let all: Vec<Value> = ops.iter().map(|op| w.operation_json(op, now)).collect();
    let (items, next) = match page(&all, &q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut answer = json!({"kind": "compute#operationList", "items": items});
    if let Some(next) = next {
        answer["nextPageToken"] = json!(next);
    }
    Json(answer).into_response()
}
