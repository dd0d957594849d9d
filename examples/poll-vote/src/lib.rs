//! A roomcast server with one custom message type, `poll.vote`: each room
//! keeps its own tally, every vote publishes the new tally to the room (as a
//! `message` with the room's `seq`) and replies it to the voter.

use std::collections::BTreeMap;

use roomcast::{Context, HandlerError, ServerBuilder};

/// The votes of one room, kept by roomcast in the room (no lock needed).
#[derive(Default)]
pub struct Tally(BTreeMap<String, u64>);

/// `{"type":"poll.vote","data":{"option":"a"}}` → counted, published, replied.
pub fn vote(ctx: &mut Context<'_>) -> Result<(), HandlerError> {
    let bad = || HandlerError::new("bad_vote", "data.option must be a string");
    let data: serde_json::Value = serde_json::from_slice(ctx.data().ok_or_else(bad)?).map_err(|_| bad())?;
    let option = data["option"].as_str().ok_or_else(bad)?.to_owned();
    let tally = ctx.room_state::<Tally>()?;
    *tally.0.entry(option).or_default() += 1;
    let json = serde_json::to_vec(&tally.0).map_err(|_| HandlerError::new("internal_error", "tally"))?;
    ctx.publish(&json)?;
    ctx.reply("poll.tally", &json)
}

/// Registers the handler on a builder.
pub fn with_polls(builder: ServerBuilder) -> ServerBuilder {
    builder.handler("poll.vote", vote)
}
