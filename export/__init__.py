"""Export half of onedge: branch extraction, ONNX, quantisation, OpenVINO, TensorRT, manifests.

Entry point: :func:`export.exporter.export_checkpoint` (checkpoint, out_dir, ExportConfig) ->
ExportResult. One module per step, imported on use so that ``export.manifest`` stays light:
``extract`` (student), ``onnx`` (torch_to_onnx), ``quantize`` and ``qdq`` (INT8/FP16,
check_tensorrt_qdq), ``openvino`` (onnx_to_openvino), ``tensorrt`` (onnx_to_tensorrt,
trtexec_command), ``backends`` (the "export format" registry), ``timing`` (latency protocol).
"""
