//! Which RPC of this contract answers anyone and which needs the bearer token,
//! and the same for serve-service's REST routes. The services' auth layer
//! (crs-platform's mechanism, crs-server's gRPC and HTTP rules) asks [`access`]
//! for every gRPC call and [`serve_rest_access`] for every REST request.

/// Whether an RPC answers anyone or only a caller with the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads, predictions, health, reflection: open to every caller.
    Open,
    /// Changes something (starts, cancels, moves, loads, writes): needs the token when one is set.
    Token,
}

/// Every RPC both services serve, by its full gRPC path, and who may call it.
/// A path missing here needs the token; a test walks every method of every
/// served service against this table, so a new RPC must be added to it.
pub const RPC_ACCESS: &[(&str, Access)] = &[
    ("/crs.train.v1.TrainService/StartTraining", Access::Token),
    ("/crs.train.v1.TrainService/GetTrainingJob", Access::Open),
    ("/crs.train.v1.TrainService/ListTrainingJobs", Access::Open),
    ("/crs.train.v1.TrainService/WatchTrainingJob", Access::Open),
    ("/crs.train.v1.TrainService/CancelTrainingJob", Access::Token),
    ("/crs.train.v1.TrainService/ListModels", Access::Open),
    ("/crs.train.v1.TrainService/Ingest", Access::Token),
    ("/crs.train.v1.TrainService/RunCycle", Access::Token),
    ("/crs.train.v1.TrainService/GetCycle", Access::Open),
    ("/crs.train.v1.TrainService/CancelCycle", Access::Token),
    ("/crs.train.v1.TrainService/ListCycles", Access::Open),
    ("/crs.train.v1.TrainService/Promote", Access::Token),
    ("/crs.train.v1.TrainService/Rollback", Access::Token),
    ("/crs.train.v1.TrainService/Score", Access::Open),
    ("/crs.train.v1.TrainService/GetReport", Access::Open),
    ("/crs.train.v1.TrainService/ImportModel", Access::Token),
    ("/crs.serve.v1.ServeService/Predict", Access::Open),
    ("/crs.serve.v1.ServeService/PredictBatch", Access::Token),
    ("/crs.serve.v1.ServeService/GetModel", Access::Open),
    ("/crs.serve.v1.ServeService/LoadModel", Access::Token),
    ("/inference.GRPCInferenceService/ServerLive", Access::Open),
    ("/inference.GRPCInferenceService/ServerReady", Access::Open),
    ("/inference.GRPCInferenceService/ModelReady", Access::Open),
    ("/inference.GRPCInferenceService/ServerMetadata", Access::Open),
    ("/inference.GRPCInferenceService/ModelMetadata", Access::Open),
    ("/inference.GRPCInferenceService/ModelInfer", Access::Open),
    ("/inference.GRPCInferenceService/RepositoryIndex", Access::Open),
    ("/inference.GRPCInferenceService/RepositoryModelLoad", Access::Token),
    ("/inference.GRPCInferenceService/RepositoryModelUnload", Access::Token),
    ("/grpc.health.v1.Health/Check", Access::Open),
    ("/grpc.health.v1.Health/Watch", Access::Open),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Access::Open),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Access::Open),
];

/// Who may call the RPC at `path` (`/package.Service/Method`). Anything not in
/// the table needs the token: forgetting an entry must not open an RPC.
pub fn access(path: &str) -> Access {
    RPC_ACCESS.iter().find(|(rpc, _)| *rpc == path).map_or(Access::Token, |(_, access)| *access)
}

/// One route of an HTTP API: its method, its path pattern (`{name}` matches
/// one path segment, as in axum and OpenAPI), and the gRPC RPC it answers as,
/// whose access it has; `None` for what only documents the API, open to all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub rpc: Option<&'static str>,
}

impl RestRoute {
    /// Who may call the route: the access of the RPC it answers as.
    pub fn access(&self) -> Access {
        self.rpc.map_or(Access::Open, access)
    }

    /// Whether a request of `method` to `path` is this route's. HEAD is GET
    /// without the body.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method = if method == "HEAD" { "GET" } else { method };
        if method != self.method {
            return false;
        }
        let (mut pattern, mut segments) = (self.path.split('/'), path.split('/'));
        loop {
            match (pattern.next(), segments.next()) {
                (None, None) => return true,
                (Some(expected), Some(segment)) => {
                    let any = expected.starts_with('{') && expected.ends_with('}');
                    if !(any && !segment.is_empty() || expected == segment) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
    }
}

macro_rules! route {
    ($method:literal $path:literal => $rpc:literal) => {
        RestRoute { method: $method, path: $path, rpc: Some(concat!("/inference.GRPCInferenceService/", $rpc)) }
    };
    ($method:literal $path:literal => open) => {
        RestRoute { method: $method, path: $path, rpc: None }
    };
}

/// serve-service's REST API, the Open Inference Protocol over HTTP: every
/// route with the `inference.GRPCInferenceService` RPC it answers as, so that
/// each needs the token exactly when its RPC does. A request matching no
/// route needs the token, as an RPC missing from [`RPC_ACCESS`] does.
pub const SERVE_REST_ROUTES: &[RestRoute] = &[
    route!("GET" "/v2/health/live" => "ServerLive"),
    route!("GET" "/v2/health/ready" => "ServerReady"),
    route!("GET" "/v2/models/{model}/ready" => "ModelReady"),
    route!("GET" "/v2/models/{model}/versions/{version}/ready" => "ModelReady"),
    route!("GET" "/v2" => "ServerMetadata"),
    route!("GET" "/v2/models/{model}" => "ModelMetadata"),
    route!("GET" "/v2/models/{model}/versions/{version}" => "ModelMetadata"),
    route!("POST" "/v2/models/{model}/infer" => "ModelInfer"),
    route!("POST" "/v2/models/{model}/versions/{version}/infer" => "ModelInfer"),
    route!("POST" "/v2/repository/index" => "RepositoryIndex"),
    route!("POST" "/v2/repository/models/{model}/load" => "RepositoryModelLoad"),
    route!("POST" "/v2/repository/models/{model}/unload" => "RepositoryModelUnload"),
    route!("GET" "/v2/openapi.json" => open),
];

/// Who may send `method` to `path` of serve-service's REST API.
pub fn serve_rest_access(method: &str, path: &str) -> Access {
    SERVE_REST_ROUTES.iter().find(|route| route.matches(method, path)).map_or(Access::Token, RestRoute::access)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFERENCE: &str = "/inference.GRPCInferenceService/";

    #[test]
    fn the_token_guards_exactly_the_rpcs_that_change_something() {
        // Spelled out again on purpose: opening an RPC must change this test as well as the table.
        let guarded: Vec<&str> = RPC_ACCESS
            .iter()
            .filter(|(_, access)| *access == Access::Token)
            .filter_map(|(rpc, _)| rpc.rsplit('/').next())
            .collect();
        let changing = [
            "StartTraining",
            "CancelTrainingJob",
            "Ingest",
            "RunCycle",
            "CancelCycle",
            "Promote",
            "Rollback",
            "ImportModel",
            "PredictBatch",
            "LoadModel",
            "RepositoryModelLoad",
            "RepositoryModelUnload",
        ];
        assert_eq!(guarded, changing);
    }

    #[test]
    fn every_rest_route_answers_as_an_rpc_of_the_table_and_the_token_guards_the_same_operations() {
        for route in SERVE_REST_ROUTES {
            if let Some(rpc) = route.rpc {
                assert!(rpc.starts_with(INFERENCE), "{route:?}");
                assert!(RPC_ACCESS.iter().any(|(listed, _)| *listed == rpc), "{route:?} answers as an unlisted RPC");
            }
        }
        // Every RPC of the Open Inference Protocol has a route, and none of the others do.
        let inference_rpcs: Vec<&str> =
            RPC_ACCESS.iter().map(|(rpc, _)| *rpc).filter(|rpc| rpc.starts_with(INFERENCE)).collect();
        for rpc in &inference_rpcs {
            assert!(SERVE_REST_ROUTES.iter().any(|route| route.rpc == Some(rpc)), "{rpc} has no REST route");
        }
        // The token guards the REST routes of the RPCs it guards, and those alone.
        let guarded: Vec<(&str, &str)> = SERVE_REST_ROUTES
            .iter()
            .filter(|route| route.access() == Access::Token)
            .map(|route| (route.method, route.path))
            .collect();
        assert_eq!(
            guarded,
            [("POST", "/v2/repository/models/{model}/load"), ("POST", "/v2/repository/models/{model}/unload")]
        );
        for rpc in inference_rpcs {
            let routes = SERVE_REST_ROUTES.iter().filter(|route| route.rpc == Some(rpc));
            for route in routes {
                assert_eq!(route.access(), access(rpc), "{route:?} and {rpc}");
            }
        }
    }

    #[test]
    fn rest_requests_get_their_routes_access_and_unknown_ones_need_the_token() {
        let open = [
            ("GET", "/v2/health/live"),
            ("HEAD", "/v2/health/ready"),
            ("GET", "/v2"),
            ("GET", "/v2/models/v1"),
            ("GET", "/v2/models/v1/versions/20250101T000000000Z-abcdef/ready"),
            ("POST", "/v2/models/v1/infer"),
            ("POST", "/v2/repository/index"),
            ("GET", "/v2/openapi.json"),
        ];
        for (method, path) in open {
            assert_eq!(serve_rest_access(method, path), Access::Open, "{method} {path}");
        }
        let guarded = [
            ("POST", "/v2/repository/models/v1/load"),
            ("POST", "/v2/repository/models/v1/unload"),
            // What matches no route: a wrong method, an extra or empty segment, a new path.
            ("GET", "/v2/repository/models/v1/load"),
            ("POST", "/v2/repository/models/v1/load/"),
            ("POST", "/v2/repository/models//load"),
            ("POST", "/v2/models/v1/infer/x"),
            ("DELETE", "/v2/models/v1"),
            ("GET", "/v3"),
        ];
        for (method, path) in guarded {
            assert_eq!(serve_rest_access(method, path), Access::Token, "{method} {path}");
        }
    }

    #[test]
    fn rpcs_outside_the_table_need_the_token() {
        assert_eq!(access("/crs.serve.v1.ServeService/Predict"), Access::Open);
        assert_eq!(access("/crs.serve.v1.ServeService/LoadModel"), Access::Token);
        assert_eq!(access("/crs.serve.v1.ServeService/SomethingNew"), Access::Token);
    }
}
