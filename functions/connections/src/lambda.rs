//! The Lambda face: which event came, which handler answers it.
//!
//! The function gets two kinds of events: API Gateway WebSocket events
//! (`$connect`, `$disconnect`, `$default`), and the EventBridge schedule
//! that runs the [sweep](crate::sweep) (`{"source":"aws.events",
//! "detail-type":"Scheduled Event",...}`).

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Deserializer, Serialize};

use crate::handler::Connections;
use crate::sweep::SweepReport;

/// An event of the connections function.
#[derive(Debug, Clone)]
pub enum ConnectionsEvent {
    /// A WebSocket route's event.
    WebSocket(Box<ApiGatewayWebsocketProxyRequest>),
    /// The schedule: run the sweep.
    Sweep,
}

impl<'de> Deserialize<'de> for ConnectionsEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let scheduled = value.get("source").and_then(|s| s.as_str()) == Some("aws.events")
            || value.get("detail-type").and_then(|s| s.as_str()) == Some("Scheduled Event");
        if scheduled {
            return Ok(Self::Sweep);
        }
        if value.get("requestContext").is_none() {
            return Err(serde::de::Error::custom(
                "neither an API Gateway WebSocket event (no requestContext) nor a scheduled event",
            ));
        }
        serde_json::from_value(value)
            .map(|event| Self::WebSocket(Box::new(event)))
            .map_err(serde::de::Error::custom)
    }
}

impl From<ApiGatewayWebsocketProxyRequest> for ConnectionsEvent {
    fn from(event: ApiGatewayWebsocketProxyRequest) -> Self {
        Self::WebSocket(Box::new(event))
    }
}

/// The function's answer.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ConnectionsAnswer {
    /// To API Gateway.
    WebSocket(ApiGatewayProxyResponse),
    /// What the sweep did (logged by Lambda).
    Sweep(SweepReport),
}

/// The Lambda handler: [`Connections::handle_until`] on a WebSocket event,
/// [`Connections::sweep`] on the schedule, both bounded by the
/// invocation's deadline.
pub async fn handler(
    connections: &Connections,
    event: LambdaEvent<ConnectionsEvent>,
) -> Result<ConnectionsAnswer, lambda_runtime::Error> {
    let deadline = i64::try_from(event.context.deadline)
        .ok()
        .filter(|&d| d > 0);
    match event.payload {
        ConnectionsEvent::WebSocket(request) => Ok(ConnectionsAnswer::WebSocket(
            connections.handle_until(&request, deadline).await,
        )),
        ConnectionsEvent::Sweep => {
            let now = edgepush_core::message::now_ms();
            match connections.sweep(now, deadline).await {
                Ok(report) => Ok(ConnectionsAnswer::Sweep(report)),
                Err(e) => {
                    tracing::error!(error = %e, "sweep failed");
                    Err(e.into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart() {
        // The EventBridge schedule's event, as the sweep rule sends it.
        let scheduled: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/scheduled.json")).unwrap();
        assert!(matches!(
            serde_json::from_value::<ConnectionsEvent>(scheduled).unwrap(),
            ConnectionsEvent::Sweep
        ));
        let websocket: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/default-ack.json")).unwrap();
        assert!(matches!(
            serde_json::from_value::<ConnectionsEvent>(websocket).unwrap(),
            ConnectionsEvent::WebSocket(_)
        ));
        assert!(serde_json::from_value::<ConnectionsEvent>(serde_json::json!({"x": 1})).is_err());
    }
}
