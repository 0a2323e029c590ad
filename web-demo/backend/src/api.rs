//! The REST API under `/api`: demo login, reads, and mutations that publish realtime events.
//!
//! Every mutating handler follows the same three steps: check the bearer token ([`Actor`]),
//! write in one SQLite transaction ([`store`]), and only after the commit publish the
//! resulting events through the embedded hub (`AppState::publish`). A write that fails
//! returns an error and publishes nothing.
//!
//! Every answer and every event keeps surprises ([`crate::surprise`]): reads need the token
//! too (only `GET /api/members`, the login screen, does not), so that the server knows whom
//! not to tell.
//!
//! A mutation may name the realtime connection of the tab that made it (the
//! `tidings-connection-id` header, [`Initiator`]): its events then leave that connection out
//! (`exclude_connection`), because that tab has already applied the change from the
//! response. It gets a `skipped` frame instead, so it neither refetches nor replays its echo.

use axum::extract::Query;
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
use crate::events::{self, Outgoing, Share};
use crate::model::{
    Gift, Item, ItemStatus, ListDetail, ListSummary, Member, Occasion, OccasionDetail,
};
use crate::store::{
    self, ActivityRow, GiftEdit, ItemEdit, ListEdit, NewGift, NewItem, NewList, NewOccasion,
    OccasionEdit, Store,
};
use crate::surprise;

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
    /// Each event goes to its [`Share`] (surprises); item and gift events are also kept for
    /// the activity feed with the same audience.
    async fn publish(
        &self,
        initiator: &Initiator,
        built: Result<Vec<Outgoing>, serde_json::Error>,
    ) {
        match built {
            Ok(events) => {
                self.remember(&events).await;
                for Outgoing { event, share } in events {
                    let audience = match share {
                        Share::Everyone => Audience::everyone(),
                        Share::AllBut(member) => {
                            Audience::everyone().exclude_users([member.to_string()])
                        }
                        Share::Only(member) => {
                            Audience::everyone().only_users([member.to_string()])
                        }
                    };
                    let audience = match &initiator.0 {
                        Some(id) => audience.exclude_connection(id.as_str()),
                        None => audience,
                    };
                    match self.tidings.publish_to(event, audience).await {
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

    /// Keeps the events of the feed's topics (`list-items:all`, `gifts:all`) for
    /// `GET /api/activity`. A failure is logged: the change and its live events stand.
    async fn remember(&self, events: &[Outgoing]) {
        let feed: Vec<(WSEvent, Share, String)> = events
            .iter()
            .filter(|o| FEED_TOPICS.contains(&o.event.topic.as_str()))
            .map(|o| {
                (
                    o.event.clone(),
                    o.share,
                    o.event.data.payload.get().to_owned(),
                )
            })
            .collect();
        if feed.is_empty() {
            return;
        }
        let result = self
            .store
            .run(move |conn| {
                let rows: Vec<ActivityRow<'_>> = feed
                    .iter()
                    .map(|(event, share, payload)| ActivityRow {
                        topic: event.topic.as_str(),
                        event: event.event.as_str(),
                        entity_id: &event.data.entity_id,
                        user_id: &event.data.user_id,
                        timestamp: &event.data.timestamp,
                        payload,
                        only_member: match share {
                            Share::Only(m) => Some(*m),
                            _ => None,
                        },
                        except_member: match share {
                            Share::AllBut(m) => Some(*m),
                            _ => None,
                        },
                    })
                    .collect();
                store::record_activity(conn, &rows)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not keep activity");
        }
    }
}

/// The topics whose events the activity feed shows (and `GET /api/activity` returns).
pub const FEED_TOPICS: [&str; 2] = ["list-items:all", "gifts:all"];

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
        .route(
            "/occasions/{id}",
            get(occasion).patch(edit_occasion).delete(delete_occasion),
        )
        .route("/lists", get(lists).post(add_list))
        .route(
            "/lists/{id}",
            get(list).patch(rename_list).delete(delete_list),
        )
        .route("/activity", get(activity))
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

async fn occasions(
    State(state): State<AppState>,
    Actor(_): Actor,
) -> Result<(Option<Stamp>, Json<Vec<Occasion>>), ApiError> {
    let stamp = stamp(&state.tidings, &[index(events::OCCASIONS_TOPIC)]).await;
    Ok((stamp, Json(state.store.run(|c| store::occasions(c)).await?)))
}

fn index(name: &'static str) -> Topic {
    Topic::new(name).unwrap_or_else(|e| unreachable!("{name} is a valid topic: {e}"))
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
    Actor(viewer): Actor,
    Id(id): Id<i64>,
) -> Result<(Option<Stamp>, Json<OccasionDetail>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::occasion(id)]).await;
    let detail = state
        .store
        .run(move |c| store::occasion_detail(c, id))
        .await?;
    let detail = OccasionDetail {
        lists: detail
            .lists
            .into_iter()
            .map(|l| surprise::list_for(l, viewer.id))
            .collect(),
        gifts: surprise::gifts_for(detail.gifts, viewer.id),
        occasion: detail.occasion,
    };
    Ok((stamp, Json(detail)))
}

async fn lists(
    State(state): State<AppState>,
    Actor(viewer): Actor,
) -> Result<(Option<Stamp>, Json<Vec<ListSummary>>), ApiError> {
    // The counts change with every item event, all of which reach `list-items:all`; lists
    // come and go on `lists:all`.
    let topics = [Topic::list_items_all(), index(events::LISTS_TOPIC)];
    let stamp = stamp(&state.tidings, &topics).await;
    let lists = state.store.run(|c| store::list_summaries(c, None)).await?;
    let lists = lists
        .into_iter()
        .map(|l| surprise::list_for(l, viewer.id))
        .collect();
    Ok((stamp, Json(lists)))
}

async fn list(
    State(state): State<AppState>,
    Actor(viewer): Actor,
    Id(id): Id<i64>,
) -> Result<(Option<Stamp>, Json<ListDetail>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::list(id)]).await;
    let detail = state.store.run(move |c| store::list_detail(c, id)).await?;
    Ok((stamp, Json(surprise::detail_for(detail, viewer.id))))
}

async fn item(
    State(store): State<Store>,
    Actor(viewer): Actor,
    Id(id): Id<i64>,
) -> Result<Json<Item>, ApiError> {
    let item = store.run(move |c| store::item(c, id)).await?;
    Ok(Json(surprise::item_for(item, viewer.id)))
}

async fn gifts(
    State(state): State<AppState>,
    Actor(viewer): Actor,
) -> Result<(Option<Stamp>, Json<Vec<Gift>>), ApiError> {
    let stamp = stamp(&state.tidings, &[Topic::gifts_all()]).await;
    let gifts = state.store.run(|c| store::gifts(c)).await?;
    Ok((stamp, Json(surprise::gifts_for(gifts, viewer.id))))
}

/// Query of `GET /api/activity`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    /// How many entries, 1 to 100 (defaults to 50).
    pub limit: Option<i64>,
}

/// The newest item and gift events the viewer may see, newest first, shaped as published.
async fn activity(
    State(store): State<Store>,
    Actor(viewer): Actor,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::InvalidField {
            field: "limit".into(),
            why: "must be 1 to 100".into(),
        });
    }
    let id = viewer.id;
    Ok(Json(
        store.run(move |c| store::activity(c, id, limit)).await?,
    ))
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
    Ok(surprise::item_for(item, actor.id))
}

/// Refuses (403) a change that the item's recipient may not make: its status, assignee and
/// comments are a surprise kept from them, and so would the answer be.
async fn not_the_recipient(state: &AppState, actor: &Member, id: i64) -> Result<(), ApiError> {
    let item = state.store.run(move |c| store::item(c, id)).await?;
    if surprise::is_for(item.recipient_id, actor.id) {
        return Err(ApiError::Forbidden(
            "this wish is on your own list: its status, buyer and comments are kept a surprise from you".into(),
        ));
    }
    Ok(())
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
    Ok((
        StatusCode::CREATED,
        Json(surprise::item_for(item, actor.id)),
    ))
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
    not_the_recipient(&state, &actor, id).await?;
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
    not_the_recipient(&state, &actor, id).await?;
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
    not_the_recipient(&state, &actor, id).await?;
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
    if input.recipient_id == actor.id {
        return Err(ApiError::InvalidField {
            field: "recipient_id".into(),
            why: "a gift for yourself would be hidden from you (gifts are a surprise for their recipient)".into(),
        });
    }
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
    hidden_gift_is_missing(&state, &actor, id).await?;
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
    hidden_gift_is_missing(&state, &actor, id).await?;
    let gift = state.store.run(move |c| store::delete_gift(c, id)).await?;
    state
        .publish(
            &initiator,
            events::gift_changed(EventType::Deleted, &gift, &actor),
        )
        .await;
    Ok(Json(gift))
}

/// A gift for the actor does not exist as far as they can tell (404, the same answer as an
/// unknown id).
async fn hidden_gift_is_missing(state: &AppState, actor: &Member, id: i64) -> Result<(), ApiError> {
    let gift = state.store.run(move |c| store::gift(c, id)).await?;
    if gift.recipient_id == actor.id {
        return Err(store::StoreError::NotFound { what: "gift", id }.into());
    }
    Ok(())
}

// ---------------------------------------------------------------- lists

async fn add_list(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Body(input): Body<NewList>,
) -> Result<(StatusCode, Json<ListSummary>), ApiError> {
    let list = state.store.run(move |c| store::add_list(c, input)).await?;
    state
        .publish(
            &initiator,
            events::list_changed(EventType::Added, &list, &actor),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(surprise::list_for(list, actor.id)),
    ))
}

async fn rename_list(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
    Body(edit): Body<ListEdit>,
) -> Result<Json<ListSummary>, ApiError> {
    let list = state
        .store
        .run(move |c| store::rename_list(c, id, edit))
        .await?;
    state
        .publish(
            &initiator,
            events::list_changed(EventType::Updated, &list, &actor),
        )
        .await;
    Ok(Json(surprise::list_for(list, actor.id)))
}

/// Deletes a list with its items and their comments (the UI asks first, saying how many).
async fn delete_list(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
) -> Result<Json<ListSummary>, ApiError> {
    let list = state.store.run(move |c| store::delete_list(c, id)).await?;
    state
        .publish(
            &initiator,
            events::list_changed(EventType::Deleted, &list, &actor),
        )
        .await;
    Ok(Json(surprise::list_for(list, actor.id)))
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

/// Deletes an occasion with its lists (their items and comments) and its gifts; publishes a
/// `DELETED` for each list and gift (their recipients kept out as usual) and for the occasion.
async fn delete_occasion(
    State(state): State<AppState>,
    Actor(actor): Actor,
    initiator: Initiator,
    Id(id): Id<i64>,
) -> Result<Json<Occasion>, ApiError> {
    let removal = state
        .store
        .run(move |c| store::delete_occasion(c, id))
        .await?;
    for list in &removal.lists {
        state
            .publish(
                &initiator,
                events::list_changed(EventType::Deleted, list, &actor),
            )
            .await;
    }
    for gift in &removal.gifts {
        state
            .publish(
                &initiator,
                events::gift_changed(EventType::Deleted, gift, &actor),
            )
            .await;
    }
    state
        .publish(
            &initiator,
            events::occasion_changed(EventType::Deleted, &removal.occasion, &actor),
        )
        .await;
    Ok(Json(removal.occasion))
}
