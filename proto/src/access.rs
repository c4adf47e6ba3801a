//! Which RPC of this contract answers anyone and which needs the bearer token.
//! The services' auth layer (crs-platform's mechanism, crs-server's gRPC rule)
//! asks [`access`] for every call.

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn rpcs_outside_the_table_need_the_token() {
        assert_eq!(access("/crs.serve.v1.ServeService/Predict"), Access::Open);
        assert_eq!(access("/crs.serve.v1.ServeService/LoadModel"), Access::Token);
        assert_eq!(access("/crs.serve.v1.ServeService/SomethingNew"), Access::Token);
    }
}
