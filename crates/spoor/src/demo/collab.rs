//! Collaboration: a chat message posted to Mattermost, stored in PostgreSQL, its attachment in
//! S3, and a message on the indexing queue that the search indexer consumes in batches into
//! Elasticsearch. The consumer is the child of this message's producer and links to the other
//! messages of its batch (earlier posts), as OpenTelemetry's messaging conventions ask.

use spoor_model::synth::Rng;

use super::span::{Kind, MS, Node, http, ms, net, postgres};

pub const SERVICES: &[&str] = &["mattermost", "search-indexer", "elasticsearch"];
pub const STATEMENTS: &[(&str, &str)] = &[
    ("channels", "SELECT id, name, displayname FROM channels WHERE teamid = $1 AND deleteat = $2"),
    ("posts", "INSERT INTO posts (id, channelid, userid, message, createat) VALUES ($1, $2, $3, $4, $5)"),
];
pub const QUEUE: &str = "post_indexing";

/// `batch`: (trace ID, span ID) of the producers of earlier messages consumed in the same batch.
pub fn build(rng: &mut Rng, batch: &[([u8; 16], [u8; 8])]) -> Node {
    let elasticsearch =
        Node::new("elasticsearch", Kind::Server, "").s("db.system", "elasticsearch").work(ms(rng, 25.0));
    let mut consumer = Node::new("search-indexer", Kind::Consumer, format!("process {QUEUE}"))
        .s("messaging.system", "rabbitmq")
        .s("messaging.operation.type", "process")
        .s("messaging.operation.name", "process")
        .s("messaging.destination.name", QUEUE)
        .s("messaging.consumer.group.name", "search-indexer")
        .i("messaging.batch.message_count", batch.len() as i64 + 1)
        .work(ms(rng, 4.0))
        .child(
            http(rng, "search-indexer", "POST", "elasticsearch.search.svc", "/_bulk", elasticsearch)
                .s("db.system", "elasticsearch")
                .s("db.operation.name", "bulk"),
        );
    consumer.detached = Some(20 * MS + rng.below(200) * MS);
    consumer.links = batch.to_vec();
    let producer = Node::new("mattermost", Kind::Producer, format!("publish {QUEUE}"))
        .s("messaging.system", "rabbitmq")
        .s("messaging.operation.type", "publish")
        .s("messaging.operation.name", "publish")
        .s("messaging.destination.name", QUEUE)
        .s("messaging.message.id", format!("{:016x}", rng.next_u64()))
        .work(net(rng))
        .child(consumer);
    let mut post = Node::new("mattermost", Kind::Server, "POST /api/v4/posts")
        .s("http.request.method", "POST")
        .s("http.route", "/api/v4/posts")
        .s("url.scheme", "https")
        .s("server.address", "chat.acme.dev")
        .i("http.response.status_code", 201)
        .work(ms(rng, 6.0))
        .child(postgres(rng, "mattermost", "mattermost", STATEMENTS[0].0, STATEMENTS[0].1))
        .child(postgres(rng, "mattermost", "mattermost", STATEMENTS[1].0, STATEMENTS[1].1));
    if rng.below(10) < 4 {
        post = post.child(
            Node::new("mattermost", Kind::Client, "S3.PutObject")
                .s("rpc.system", "aws-api")
                .s("rpc.service", "S3")
                .s("rpc.method", "PutObject")
                .s("aws.s3.bucket", "acme-mattermost-files")
                .s("cloud.provider", "aws")
                .s("cloud.region", "eu-west-1")
                .s("server.address", "s3.eu-west-1.amazonaws.com")
                .s("peer.service", "aws-s3")
                .work(ms(rng, 60.0)),
        );
    }
    post.child(producer)
}
