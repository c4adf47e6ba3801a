//! What a server's reflection lists, asked as a client of either version would.

use tonic::transport::Channel;

/// The services listed by `grpc.reflection.v1` and by `grpc.reflection.v1alpha`, each sorted.
pub async fn reflected_services(channel: Channel) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.expect("v1").into_inner();
    let response = stream.message().await.expect("v1 message").expect("a v1 response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    v1_names.sort();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.expect("v1alpha").into_inner();
    let response = stream.message().await.expect("v1alpha message").expect("a v1alpha response");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a service list: {response:?}");
    };
    let mut alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    alpha_names.sort();
    (v1_names, alpha_names)
}
