//! `poll-vote`: roomcast's defaults (and `ROOMCAST_*` settings) plus `poll.vote`.

fn main() -> anyhow::Result<()> {
    let config = roomcast::Config::load(roomcast::config::Sources::from_process_env(None, Vec::new()))?;
    poll_vote::with_polls(roomcast::Server::builder().config(config)).run()
}
