//! The REST API under `/api`: demo login, reads, and mutations that publish realtime events.
//!
//! Every mutating handler follows the same three steps: check the bearer token ([`Actor`]),
//! write in one SQLite transaction ([`store`]), and only after the commit publish the
//! resulting events through the embedded hub (`AppState::publish`). A write that fails
//! returns an error and publishes nothing.
//!
//! A mutation may name the realtime connection of the tab that made it (the
//! `tidings-connection-id` header, [`Initiator`]): its events then leave that connection out
//! (`exclude_connection`), because that tab has already applied the change from the
//! response. It gets a `skipped` frame instead, so it neither refetches nor replays its echo.

use axum::extract::{FromRef, FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tidings_protocol::{CONNECTION_ID_HEADER, EventType, Topic, WSEvent, is_valid_connection_id};
use tidings_server::{Audience, Stamp, Tidings};

use crate::auth::{Actor, Auth};
use crate::error::ApiError;
use crate::events;
use crate::model::{
    Gift, Item, ItemStatus, ListDetail, ListSummary, Member, Occasion, OccasionDetail,
};
use crate::store::{self, GiftEdit, ItemEdit, NewGift, NewItem, NewOccasion, OccasionEdit, Store};

/// What every handler can reach.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The embedded realtime server (its hub is where events are published).
    pub tidings: Tidings,
    /// Session tokens.
    pub auth: Auth,
}

impl AppState {
    /// Publishes events built for a committed change, through the broker (the same call
    /// whether the embedded server runs in memory or on Redis). Building them cannot fail for
    /// the demo's types, and publishing fails only when Redis is away; either way the write
    /// still stands, so log instead of failing the request (clients refetch on reconnect).
    /// The [`Initiator`]'s connection, when named, is left out of the events.
    async fn publish(&self, initiator: &Initiator, built: Result<Vec<WSEvent>, serde_json::Error>) {
        let audience = match &initiator.0 {
            Some(id) => Audience::everyone().exclude_connection(id.as_str()),
            None => Audience::everyone(),
        };
        match built {
            Ok(events) => {
                for event in events {
                    match self.tidings.publish_to(event, audience.clone()).await {
                        Ok(published) => tracing::debug!(
                            topic = %published.topic,
                            seq = published.seq,
                            delivered = published.delivered,
                            "published"
                        ),
                        Err(e) => tracing::warn!(error = %e, "could not publish"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "could not build event payload"),
        }
    }
}

/// A JSON body whose rejections are [`ApiError`]s (400 / 415 / 422 with a JSON error).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// A path parameter whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Id<T>(pub T);

/// The realtime connection of the tab that makes a mutation, from the optional
/// `tidings-connection-id` header (the client's `connectionId`, sent by the UI's fetch
/// wrapper): the change's events are published to everyone but that connection. `None`
/// without the header (a script, curl, another backend): everyone gets the events. A header
/// that is not a valid connection id (1 to 64 ASCII letters, digits, `-`, `_`) is a 400, so a
/// broken client is told rather than silently echoed.
#[derive(Debug, Clone, Default)]
pub struct Initiator(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Initiator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(CONNECTION_ID_HEADER) else {
            return Ok(Initiator(None));
        };
        match value.to_str() {
            Ok(id) if is_valid_connection_id(id) => Ok(Initiator(Some(id.to_owned()))),
            _ => Err(ApiError::BadRequest(format!(
                "{CONNECTION_ID_HEADER}: not a connection id (1 to 64 ASCII letters, digits, '-' or '_')"
            ))),
        }
    }
}

/// The `/api` routes, with their state applied.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/members", get(members))
        .route("/occasions", get(occasions).post(add_occasion))
        .route("/occasions/{id}", get(occasion).patch(edit_occasion))
        .route("/lists", get(lists))
        .route("/lists/{id}", get(list))
        .route("/lists/{id}/items", post(add_item))
        .route(
            "/items/{id}",
            get(item).patch(edit_item).delete(delete_item),
        )
        .route("/items/{id}/status", put(set_status))
        .route("/items/{id}/assignee", put(assign))
        .route("/items/{id}/comments", post(add_comment))
        .route("/gifts", get(gifts).post(add_gift))
        .route("/gifts/{id}", patch(edit_gift).delete(delete_gift))
        .fallback(|| async { ApiError::NotFound("no such API endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
        .with_state(state)
}

// ---------------------------------------------------------------- session

/// Body of `POST /api/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The member to act as.
    pub member_id: i64,
}

/// Answer of `POST /api/login`.
#[derive(Serialize)]
pub struct Session {
    /// Bearer token for the API and `/ws?token=`.
    pub token: String,
    /// Who is logged in.
    pub member: Member,
}

async fn login(
    State(state): State<AppState>,
    Body(input): Body<Login>,
) -> Result<Json<Session>, ApiError> {
    let id = input.member_id;
    let member = state
        .store
        .run(move |conn| store::member(conn, id))
        .await?
        .ok_or_else(|| ApiError::Unprocessable(format!("member_id: member {id} does not exist")))?;
    let token = state.auth.issue(&member)?;
    Ok(Json(Session { token, member }))
}

async fn me(Actor(member): Actor) -> Json<Member> {
    Json(member)
}

// ---------------------------------------------------------------- reads

async fn members(State(store): State<Store>) -> Result<Json<Vec<Member>>, ApiError> {
    Ok(Json(store.run(|c| store::members(c)).await?))
}

async fn occasions(State(store): State<Store>) -> Result<Json<Vec<Occasion>>, ApiError> {
    Ok(Json(store.run(|c| store::occasions(c)).await?))
}

/// A read's stamp: the positions of the topics whose events change what it returns, taken
/// BEFORE the read (the `tidings-positions` header; see `tidings_server::stamp`). The client
/// resumes those topics from there, so an event committed between this read and its
/// subscription is replayed to it. `None` when the broker cannot be asked: the client then
/// refetches once after its subscription's ack instead.
async fn stamp(tidings: &Tidings, topics: &[Topic]) -> Option<Stamp> {
    match tidings.read_stamp(topics).await {
        Ok(stamp) => Some(stamp),
        Err(e) => {
            tracing::debug!(error = %e, "read without a stamp");
            None
        }
    }
}

async fn occasion(
    State(state): State<AppState>,
    Id(id): Id<i64>,
) -> Result<(Option<Stamp>, Json<OccasionDetail>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::occasion(id)]).await;
    let detail = state
        .store
        .run(move |c| store::occasion_detail(c, id))
        .await?;
    Ok((stamp, Json(detail)))
}

async fn lists(
    State(state): State<AppState>,
) -> Result<(Option<Stamp>, Json<Vec<ListSummary>>), ApiError> {
    // The counts change with every item event, all of which reach `list-items:all`.
    let stamp = stamp(&state.tidings, &[Topic::list_items_all()]).await;
    let lists = state.store.run(|c| store::list_summaries(c, None)).await?;
    Ok((stamp, Json(lists)))
}

async fn list(
    State(state): State<AppState>,
    Id(id): Id<i64>,
) -> Result<(Option<Stamp>, Json<ListDetail>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::list(id)]).await;
    let detail = state.store.run(move |c| store::list_detail(c, id)).await?;
    Ok((stamp, Json(detail)))
}

async fn item(State(store): State<Store>, Id(id): Id<i64>) -> Result<Json<Item>, ApiError> {
    Ok(Json(store.run(move |c| store::item(c, id)).await?))
}

async fn gifts(
    State(state): State<AppState>,
) -> Result<(Option<Stamp>, Json<Vec<Gift>>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::gifts_all()]).await;
    let gifts = state.store.run(|c| store::gifts(c)).await?;
    Ok((stamp, Json(gifts)))
}

// ---------------------------------------------------------------- items

/// Runs one item mutation in the store and, once it has committed, publishes `event` for the
/// changed item on its list's topic and `list-items:all`. A failed write publishes nothing.
async fn change_item(
    state: &AppState,
    actor: &Member,
    initiator: &Initiator,
    event: EventType,
    op: impl FnOnce(&mut rusqlite::Connection) -> Result<Item, store::StoreError> + Send + 'static,
) -> Result<Item, ApiError> {
    let item = state.store.run(op).await?;
    state
        .publish(initiator, events::item_changed(event, &item, actor, None))
        .await;
    Ok(item)
}

async fn add_item(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(list_id): Id<i64>,
    Body(input): Body<NewItem>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let by = actor.id;
    let item = state
        .store
        .run(move |c| store::add_item(c, list_id, by, input))
        .await?;
    state
        .publish(
            &initiator,
            events::item_changed(EventType::Added, &item, &actor, None),
        )
        .await;
    Ok((StatusCode::CREATED, Json(item)))
}

async fn edit_item(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(edit): Body<ItemEdit>,
) -> Result<Json<Item>, ApiError> {
    let item = change_item(&state, &actor, &initiator, EventType::Updated, move |c| {
        store::edit_item(c, id, edit)
    })
    .await?;
    Ok(Json(item))
}

/// Body of `PUT /api/items/{id}/status`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The new status (`IDEA`, `SELECTED`, `PURCHASED`, `RECEIVED`).
    pub status: ItemStatus,
}

async fn set_status(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(change): Body<StatusChange>,
) -> Result<Json<Item>, ApiError> {
    let item = change_item(
        &state,
        &actor,
        &initiator,
        EventType::StatusChanged,
        move |c| store::set_item_status(c, id, change.status),
    )
    .await?;
    Ok(Json(item))
}

/// Body of `PUT /api/items/{id}/assignee`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The member taking care of the item; `null` unassigns it.
    pub assignee_id: Option<i64>,
}

async fn assign(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(assignment): Body<Assignment>,
) -> Result<Json<Item>, ApiError> {
    let item = change_item(&state, &actor, &initiator, EventType::Assigned, move |c| {
        store::assign_item(c, id, assignment.assignee_id)
    })
    .await?;
    Ok(Json(item))
}

/// Body of `POST /api/items/{id}/comments`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// The text.
    pub body: String,
}

async fn add_comment(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(input): Body<NewComment>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let by = actor.id;
    let (item, comment) = state
        .store
        .run(move |c| store::add_comment(c, id, by, &input.body))
        .await?;
    state
        .publish(
            &initiator,
            events::item_changed(EventType::CommentAdded, &item, &actor, Some(&comment)),
        )
        .await;
    Ok((StatusCode::CREATED, Json(item)))
}

async fn delete_item(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
) -> Result<Json<Item>, ApiError> {
    let item = change_item(&state, &actor, &initiator, EventType::Deleted, move |c| {
        store::delete_item(c, id)
    })
    .await?;
    Ok(Json(item))
}

// ---------------------------------------------------------------- gifts

async fn add_gift(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Body(input): Body<NewGift>,
) -> Result<(StatusCode, Json<Gift>), ApiError> {
    let gift = state.store.run(move |c| store::add_gift(c, input)).await?;
    state
        .publish(
            &initiator,
            events::gift_changed(EventType::Added, &gift, &actor),
        )
        .await;
    Ok((StatusCode::CREATED, Json(gift)))
}

async fn edit_gift(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(edit): Body<GiftEdit>,
) -> Result<Json<Gift>, ApiError> {
    let status_only = edit.status.is_some()
        && edit.name.is_none()
        && edit.notes.is_none()
        && edit.giver_id.is_none();
    let gift = state
        .store
        .run(move |c| store::edit_gift(c, id, edit))
        .await?;
    let kind = if status_only {
        EventType::StatusChanged
    } else {
        EventType::Updated
    };
    state
        .publish(&initiator, events::gift_changed(kind, &gift, &actor))
        .await;
    Ok(Json(gift))
}

async fn delete_gift(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
) -> Result<Json<Gift>, ApiError> {
    let gift = state.store.run(move |c| store::delete_gift(c, id)).await?;
    state
        .publish(
            &initiator,
            events::gift_changed(EventType::Deleted, &gift, &actor),
        )
        .await;
    Ok(Json(gift))
}

// ---------------------------------------------------------------- occasions

async fn add_occasion(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Body(input): Body<NewOccasion>,
) -> Result<(StatusCode, Json<Occasion>), ApiError> {
    let occasion = state
        .store
        .run(move |c| store::add_occasion(c, input))
        .await?;
    state
        .publish(
            &initiator,
            events::occasion_changed(EventType::Added, &occasion, &actor),
        )
        .await;
    Ok((StatusCode::CREATED, Json(occasion)))
}

async fn edit_occasion(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(edit): Body<OccasionEdit>,
) -> Result<Json<Occasion>, ApiError> {
    let occasion = state
        .store
        .run(move |c| store::edit_occasion(c, id, edit))
        .await?;
    state
        .publish(
            &initiator,
            events::occasion_changed(EventType::Updated, &occasion, &actor),
        )
        .await;
    Ok(Json(occasion))
}
